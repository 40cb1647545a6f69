"""River dashboards (ipywidgets) built on river_magics.Client: nodes, tasks, VPS cards.

Placeholder until the dashboard lands; `%river dashboard` will import from here.
"""
