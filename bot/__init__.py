"""Backup Wizard: BorgBackup chains set up and run from Slack."""

import warnings

# asyncssh (2.24) imports cryptography's DSA classes, which cryptography 47+ deprecates with a warning at import
# time: a warning about asyncssh's code, printed on every command an operator runs (and breaking the CLI's
# one-sentence errors). The bot never offers or accepts DSA keys (ed25519 and RSA only), so it is silenced here,
# for asyncssh's modules only.
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh\.")
