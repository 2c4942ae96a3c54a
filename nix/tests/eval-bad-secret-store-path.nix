# Must fail (nixos-eval.sh exit 2): an environmentFile string that names a store path.
# expect: is in the Nix store, which is world-readable
{ ... }:
{
  services.neustream = {
    enable = true;
    controlPlaneUrl = "https://api.neustream.app";
    environmentFile = "/nix/store/00000000000000000000000000000000-neustream.env";
  };
}
