"""The `/backup new` wizard: a transitions AsyncMachine over ten steps, saved after every transition.

Flows decide, Slack renders: steps return view models (:mod:`bot.flows.wizard.steps.base`) and validate
submissions; ``bot/slack`` turns those into modals. Nothing here imports Slack.
"""
