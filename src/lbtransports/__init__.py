"""lbtransports: plugs the lbcore decision core into real HTTP backends."""

__all__: tuple[str, ...] = ()
