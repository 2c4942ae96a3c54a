# Must fail (nixos-eval.sh exit 2): rtmpPort contradicted by MediaMTX's rtmpAddress and by the
# relays' ingest URL.
# expect: services.neustream.rtmpPort is 1936 but services.mediamtx.settings.rtmpAddress is ":1935"
# expect: services.neustream.settings.NEUSTREAM_INGEST_URL (rtmp://127.0.0.1:1935) must be an rtmp:// URL on services.neustream.rtmpPort (1936)
{ ... }:
{
  services.neustream = {
    enable = true;
    controlPlaneUrl = "https://api.neustream.app";
    rtmpPort = 1936;
    settings.NEUSTREAM_INGEST_URL = "rtmp://127.0.0.1:1935";
  };
  services.mediamtx.settings.rtmpAddress = ":1935";
}
