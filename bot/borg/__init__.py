"""The borg layer: one module per borg subcommand, each building an argument tuple and parsing the output.

Everything runs through :func:`bot.borg.runner.run_borg` and a :class:`~bot.transport.base.Transport`, so
the same code drives borg on a source server, on a pool, or on the bot's own host. Nothing here imports
Slack or the ORM; repositories are described by :class:`bot.borg.repo.Repo` values.
"""
