# Offline evaluation (../shared/tools/nixos-eval.sh . nix/tests/eval-config.nix): the README's
# three-line configuration plus a few options, which must evaluate with no warning and no failed
# assertion (nix/check.sh also looks for each "expect:" line in the output). See docs/nixos.md.
# expect: runOnReady:
# expect: runOnNotReady:
# expect: EnvironmentFile=/run/secrets/neustream.env
# expect: RuntimeDirectory=neustream/streams
# expect: CPUQuota=75%
# expect: Environment="NEUSTREAM_CA_FILE=/etc/neustream/ca.pem"
# expect: CONTROL_PLANE_URL=https://api.neustream.app
# expect: subject.user !== "mediamtx"
# expect: firewall: tcp=[1935]
# expect: reconcile --mediamtx-stopped --timeout 5s
# expect: OnUnitActiveSec=30s
# expect: d /var/lib/neustream/sessions 0700 mediamtx mediamtx -
{ ... }:
{
  services.neustream = {
    enable = true;
    controlPlaneUrl = "https://api.neustream.app";
    environmentFile = "/run/secrets/neustream.env";

    openFirewall = true;
    relay.cpuQuota = "75%";
    reconcile.interval = "30s";
    settings = {
      NEUSTREAM_LOG_LEVEL = "debug";
      NEUSTREAM_STREAM_END_TIMEOUT = "60s";
      NEUSTREAM_CA_FILE = "/etc/neustream/ca.pem";
    };
  };
}
