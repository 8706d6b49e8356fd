"""The contracts backends implement: online and offline stores, source readers, engines.

Services reach backends only through these classes and the plugin table (``featurestore.plugins``).
"""
