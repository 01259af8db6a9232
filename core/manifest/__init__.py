"""The manifest: its model and codec (``model``), the generic fenced
versioned object (``versioned``) and the manifest store that plugs the two
together (``store``).  Fencing lives here.  See docs/format/manifest.md."""
