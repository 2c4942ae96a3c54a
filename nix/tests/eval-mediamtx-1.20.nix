# Must evaluate cleanly: with MediaMTX >= 1.20 the hooks are runOnAvailable/runOnUnavailable,
# with a privileged RTMP port the unit gets CAP_NET_BIND_SERVICE, and a value with spaces
# and a dollar sign is quoted literally in the env file.
# expect: runOnAvailable:
# expect: runOnUnavailable:
# expect: AmbientCapabilities=CAP_NET_BIND_SERVICE
# expect: NEUSTREAM_NOTE='a $literal value'
{ pkgs, ... }:
{
  services.mediamtx.package = pkgs.mediamtx // {
    version = "1.20.0";
  };
  services.neustream = {
    enable = true;
    controlPlaneUrl = "http://10.0.0.2:3000";
    rtmpPort = 443;
    settings.NEUSTREAM_ALLOW_INSECURE_CONTROL_PLANE = true;
    settings.NEUSTREAM_NOTE = "a $literal value";
  };
}
