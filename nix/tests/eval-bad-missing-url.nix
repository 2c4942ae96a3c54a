# Must fail (nixos-eval.sh exit 2): no Control Plane URL, and MediaMTX's API switched off.
# expect: services.neustream.controlPlaneUrl is not set
# expect: or set services.neustream.streamsFile
# expect: services.mediamtx.settings.api is false
{ ... }:
{
  services.neustream.enable = true;
  services.mediamtx.settings.api = false;
}
