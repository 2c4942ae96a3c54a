# The neustream binary plus its OS integration files (systemd units, polkit rule, tmpfiles,
# sysusers), man page and shell completions. Built from Cargo.lock; no network at build time.
{
  lib,
  stdenv,
  rustPlatform,
  installShellFiles,
  cmake,
  ffmpeg,
}:

let
  cargoToml = lib.importTOML ../Cargo.toml;
  # Only what the build reads: edits to docs/, nix/ or .ci/ do not rebuild the package.
  root = ../.;
  fileset = lib.fileset.unions [
    ../Cargo.toml
    ../Cargo.lock
    ../src
    ../systemd
    (lib.fileset.maybeMissing ../build.rs)
    # Integration tests are not run here (they boot systemd-nspawn machines as root), but Cargo
    # reads their target declarations when it parses the manifest.
    (lib.fileset.maybeMissing ../tests)
  ];
in
rustPlatform.buildRustPackage {
  pname = cargoToml.package.name;
  inherit (cargoToml.package) version;

  src = lib.fileset.toSource { inherit root fileset; };

  cargoLock.lockFile = ../Cargo.lock;

  # reqwest uses rustls with aws-lc-rs: aws-lc-sys needs only a C compiler on x86_64 and
  # aarch64 (pre-generated bindings); on other CPUs its build script wants CMake.
  nativeBuildInputs =
    [ installShellFiles ]
    ++ lib.optionals (!stdenv.hostPlatform.isx86_64 && !stdenv.hostPlatform.isAarch64) [ cmake ];
  # cmake is for aws-lc-sys's build script, not for configuring this crate.
  dontUseCmakeConfigure = true;

  # Unit tests only (`#[cfg(test)]` in the binary crate). The system tests in tests/ boot a real
  # systemd in systemd-nspawn and need root: they run in CI, not in the Nix sandbox.
  cargoTestFlags = [ "--bins" ];
  # Unit tests that make their input with ffmpeg (silence, codec headers: x264, x265, aom, opus).
  nativeCheckInputs = [ ffmpeg ];
  # The RTMP client's interop tests run real nginx-rtmp and MediaMTX servers: CI runs them.
  checkFlags = [ "--skip=rtmp::tests_interop" ];

  postInstall =
    ''
      # The units reference the binary as /usr/local/bin/neustream (Debian layout).
      install -Dm444 -t $out/lib/systemd/system systemd/neustream-relay@.service systemd/neustream.slice \
        systemd/neustream-reconcile.service systemd/neustream-reconcile.timer \
        systemd/neustream-refresh.service systemd/neustream-refresh.timer \
        systemd/neustream-metrics.socket systemd/neustream-metrics.service
      for unit in neustream-relay@.service neustream-reconcile.service neustream-refresh.service \
        neustream-metrics.service; do
        substituteInPlace $out/lib/systemd/system/$unit \
          --replace-fail /usr/local/bin/neustream $out/bin/neustream
      done
      install -Dm444 systemd/neustream.rules $out/share/polkit-1/rules.d/50-neustream.rules
      install -Dm444 systemd/neustream.tmpfiles.conf $out/lib/tmpfiles.d/neustream.conf
      install -Dm444 systemd/neustream.sysusers.conf $out/lib/sysusers.d/neustream.conf
    ''
    + lib.optionalString (stdenv.buildPlatform.canExecute stdenv.hostPlatform) ''
      installShellCompletion --cmd neustream \
        --bash <($out/bin/neustream completions bash) \
        --fish <($out/bin/neustream completions fish) \
        --zsh <($out/bin/neustream completions zsh)
      $out/bin/neustream manpage > neustream.1
      installManPage neustream.1
    '';

  meta = {
    description = "MediaMTX hooks that authenticate publishers and relay their streams to RTMP destinations";
    longDescription = cargoToml.package.description;
    homepage = "https://github.com/neustream/neustream-media-server";
    license = lib.licenses.mit;
    mainProgram = "neustream";
    platforms = lib.platforms.linux;
    maintainers = [ ];
  };
}
