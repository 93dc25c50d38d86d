"""The composition root: the one place that builds a backend, an engine and a live stack from typed settings.

The app (``app/worker.py``), the command line (``parley chat``, ``parley replay``, ``parley bench engine``) and the
tests use it alike. It is the top of ``core``: it may import every other part of ``core``, and nothing in ``core``
imports it (the command-line dispatcher ``core/cli.py`` names its handlers lazily).

* :mod:`core.compose.spec`: :class:`ProfileSpec`, what to load, and the one translation from the app's settings
  (or a session's recorded settings, or command-line flags) into it;
* :mod:`core.compose.build`: backends, engine settings and the parts a file-driven run or a replay needs;
* :mod:`core.compose.live`: :class:`LiveStack`, the Qt-free live conversation (AudioIO + Engine + recording) that
  the app's worker drives;
* :mod:`core.compose.commands`: the ``parley chat``, ``parley replay`` and ``parley bench engine`` handlers.
"""
