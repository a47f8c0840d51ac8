"""The commands other than the daemon itself: check, doctor, status, retry, demo."""
