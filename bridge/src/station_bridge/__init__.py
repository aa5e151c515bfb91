"""station-bridge: ZeroMQ streams into InfluxDB 1.x, journaled so that no point is lost silently.

The pipeline, one module per stage:
sources (ZMQ) -> decoders (framings) -> mapping (line protocol) -> binning (optional)
-> sinks (batching, HTTP, journal, dead letters) and cache (Redis latest values);
metrics and config support every stage, cli ties them together.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("station-bridge")
except PackageNotFoundError:  # run from the source tree without being installed
    __version__ = "0+unknown"
