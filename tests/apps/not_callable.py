"""`app` exists but is not callable."""
app = 42
