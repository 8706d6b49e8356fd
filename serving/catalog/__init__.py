"""The web catalog served at ``/ui`` (``serving.routers.ui``): server-rendered HTML pages of the
registry's objects, their lineage, history, freshness and quality.

- ``index``: the registry at one version as a searchable index with its lineage edges, built once per
  registry version (a page costs one read of the registry's version number).
- ``health``: freshness, the newest quality runs, drift and stream jobs of every view, refreshed in the
  background at most every ``FEATURESTORE_UI_REFRESH_SECONDS``.
- ``lineage``: the graph drawn as SVG (columns by kind, nodes as links).
- ``pages`` and ``html``: the pages themselves (plain Python and ``html.escape``; no template engine).
- ``static/``: the style sheet and the small script (search as you type, ``/`` to search).
"""
