"""The services of the reference system. They never import each other: they share only
``system.chassis`` and the event schemas in ``system.events``."""
