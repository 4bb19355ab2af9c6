"""Real-part fixture; see TESTING.md."""
