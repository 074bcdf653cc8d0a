"""Data helpers: the device-cloud protocol built on RecBole's sequential datasets."""

from recbole_lsc.data.protocol import PHASES, DeviceCloudProtocol, user_sequences

__all__ = ["PHASES", "DeviceCloudProtocol", "user_sequences"]
