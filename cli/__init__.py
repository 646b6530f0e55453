"""The command lines: flags several scripts share, the search's flags, and the settings they turn into."""
