# Offline evaluation: standalone mode, keys and destinations from a streams file outside the
# store, no Control Plane. Must evaluate with no warning and no failed assertion.
# expect: NEUSTREAM_STREAMS_FILE=/var/lib/secrets/neustream-streams.toml
# expect: runOnReady:
{ ... }:
{
  services.neustream = {
    enable = true;
    streamsFile = "/var/lib/secrets/neustream-streams.toml";
  };
}
