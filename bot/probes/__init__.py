"""Remote facts: one module per probe (command + pure parser); see base.py."""
