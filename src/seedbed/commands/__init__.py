"""What each `seedbed` command does, between the command line and the services.

The CLI parses flags and builds the clients once (:mod:`.clients`); a command module takes the
config and those clients, runs the steps or services, and returns a typed result the CLI prints
as text or JSON. Nothing below this package connects to anything by itself.
"""
