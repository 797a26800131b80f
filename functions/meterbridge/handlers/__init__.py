"""Lambda entry points: wire Powertools, parse the event, call the domain, map the result."""
