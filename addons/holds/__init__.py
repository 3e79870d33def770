"""Approval holds: the shared hold store, the admin API and reviewer console, and notifications.

The Approvals addon (addons/approvals.py) parks risky flows here; approvers decide through the admin
API (addons/holds/admin.py), the console page it serves, or `./run.sh approvals` (addons/cli/approvals.py).
"""
