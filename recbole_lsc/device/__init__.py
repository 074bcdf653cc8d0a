"""The device: the SRM wrapper, fusion, request features and policies, fine-tuning stages."""
