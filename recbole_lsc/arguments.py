"""Command-line config overrides, RecBole's way: every extra ``--key=value`` is a config value."""


def config_overrides(parser, argv):
    """``(known args, overrides)`` of ``argv``; anything else than ``--key=value`` is refused
    through ``parser.error`` (one usage line, exit 2)."""
    args, rest = parser.parse_known_args(argv)
    bad = [arg for arg in rest if not (arg.startswith("--") and "=" in arg and len(arg) > 3)]
    if bad:
        parser.error(f"unrecognised argument(s) {' '.join(bad)}; config values are given as --key=value")
    return args, rest
