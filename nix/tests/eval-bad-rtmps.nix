# Must fail (nixos-eval.sh exit 2): RTMPS on without a key, and on the RTMP port.
# expect: services.neustream.rtmps.enable is set, but MediaMTX cannot start RTMPS without a certificate
# expect: services.neustream.rtmps.port (1935) must differ from services.neustream.rtmpPort
{ ... }:
{
  services.neustream = {
    enable = true;
    controlPlaneUrl = "https://api.neustream.app";
    rtmps = {
      enable = true;
      port = 1935;
      certificate = "/var/lib/acme/ingest.example.net/fullchain.pem";
    };
  };
}
