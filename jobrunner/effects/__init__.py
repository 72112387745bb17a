"""Side effects under control: the idempotency ledger, approvals, the call gate."""
