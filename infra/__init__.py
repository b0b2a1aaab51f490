"""What every app uses and none owns: metrics, log context and redaction, background tasks,
the JSON parser. It sits below the apps (it imports none of them, nor `config`), so that
`chat`, `tenants`, `accounts` and `middleware` never import upward from the composition root.
"""
