# Wiring only: the package, module and tests live in nix/ (see docs/nixos.md).
# No flake.lock is committed: it cannot be produced offline. `nix flake lock` (or any `nix build`)
# writes one on first use; pin nixpkgs there or with `--override-input nixpkgs ...`.
{
  description = "Neustream media server: MediaMTX hooks and per-stream RTMP relays under systemd";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (_: pkgs: rec {
        neustream = pkgs.callPackage ./nix/package.nix { };
        default = neustream;
      });

      # Its package defaults to `pkgs.callPackage ./nix/package.nix { }` with the host's nixpkgs.
      nixosModules.default = ./nix/module.nix;

      checks = forAllSystems (
        system: pkgs: {
          package = self.packages.${system}.default;
          vm = import ./nix/tests/vm.nix {
            inherit pkgs;
            neustream = self.packages.${system}.default;
          };
        }
      );

      devShells = forAllSystems (_: pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            cargo
            rustc
            clippy
            rustfmt
            ffmpeg
            mediamtx
          ];
        };
      });

      formatter = forAllSystems (_: pkgs: pkgs.nixfmt-rfc-style);
    };
}
