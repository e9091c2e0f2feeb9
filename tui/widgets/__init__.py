"""Widgets of the terminal app: each one shows values it is given and reads nothing itself."""
