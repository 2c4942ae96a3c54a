# Must fail (nixos-eval.sh exit 2): plain http:// to a non-loopback Control Plane.
# expect: is plain http:// to a non-loopback host
{ ... }:
{
  services.neustream = {
    enable = true;
    controlPlaneUrl = "http://cp.example.org";
  };
}
