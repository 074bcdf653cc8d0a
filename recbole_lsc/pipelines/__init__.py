"""One pipeline per kind of run; ``quick_start`` picks it by model name."""
