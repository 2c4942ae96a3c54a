# Must fail (nixos-eval.sh exit 2): a streams file given as a Nix path value, which would be
# copied into the world-readable store.
# expect: services.neustream.streamsFile is a Nix path value
{ ... }:
{
  services.neustream = {
    enable = true;
    streamsFile = ./eval-standalone.nix;
  };
}
