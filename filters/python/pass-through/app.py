"""pass-through, in Python: keeps every event (the cost of a Python filter itself)."""

import weir_filter as weir


class PassThrough(weir.Filter):
    def filter(self, events):
        return [weir.keep() for _ in events]


WitWorld = weir.export(PassThrough)
