"""Plugin sequential models (one class per file, file name = class name in lower case)."""
