"""The report: its contract (:mod:`.format`), its writer (:mod:`.writer`) and its reader (:mod:`.reader`)."""
