# Must fail (nixos-eval.sh exit 2): secrets that would land in the world-readable Nix store.
# expect: services.neustream.environmentFile is a Nix path value
# expect: services.neustream.settings.CONTROL_PLANE_TOKEN would be written to the world-readable Nix store
{ ... }:
{
  services.neustream = {
    enable = true;
    controlPlaneUrl = "https://api.neustream.app";
    # A path literal: `"${...}"` would copy it into the store.
    environmentFile = ./eval-config.nix;
    settings.CONTROL_PLANE_TOKEN = "secret";
  };
}
