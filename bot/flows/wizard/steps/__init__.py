"""One module per wizard step; :data:`bot.flows.wizard.registry.STEPS` lists them in order."""
