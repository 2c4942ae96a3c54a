# Must fail (nixos-eval.sh exit 2): a streams file in the Nix store, together with a Control
# Plane URL.
# expect: must be an absolute path outside the Nix store
# expect: both a Control Plane URL (https://api.neustream.app) and a streams file
{ ... }:
{
  services.neustream = {
    enable = true;
    controlPlaneUrl = "https://api.neustream.app";
    streamsFile = "/nix/store/00000000000000000000000000000000-streams.toml";
  };
}
