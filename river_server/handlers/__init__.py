"""Tornado handlers of the host: user API (`api`), event stream (`events`), runner API (`runner`)."""
