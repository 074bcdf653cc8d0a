"""Data helpers: the device-cloud protocol built on RecBole's sequential datasets."""

from recbole_lsc.data.protocol import PHASES, DeviceCloudProtocol, model_fields, user_sequences

__all__ = ["PHASES", "DeviceCloudProtocol", "model_fields", "user_sequences"]
