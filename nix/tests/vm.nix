# NixOS VM test: MediaMTX + services.neustream on `server` (with a Control Plane double), an
# nginx-rtmp `destination`, and an ffmpeg `publisher`.
#   nix build .#checks.x86_64-linux.vm        (needs KVM and the binary cache)
# It asserts that a valid key is relayed to its destination, that neustream-relay@<key>.service
# starts and stops with the stream under the module's limits and is hardened
# (systemd-analyze security <= 2.0), and that an unknown key is dropped and never relayed.
{
  pkgs,
  neustream ? pkgs.callPackage ../package.nix { },
}:

let
  nodes = import ./vm-nodes.nix;
  ffmpeg = pkgs.lib.getExe' pkgs.ffmpeg-headless "ffmpeg";
  ffprobe = pkgs.lib.getExe' pkgs.ffmpeg-headless "ffprobe";
in
pkgs.testers.runNixOSTest {
  name = "neustream";
  globalTimeout = 900;

  nodes = {
    server = {
      imports = [
        ../module.nix
        nodes.server
      ];
      services.neustream.package = neustream;
      virtualisation.memorySize = 1536;
    };
    destination = nodes.destination;
    publisher = nodes.publisher;
  };

  testScript = ''
    import re

    def publish(key):
        # A test pattern with audio, as OBS would send it; a transient unit so it can be stopped.
        return (
            f"systemd-run --unit=publish-{key} --property=Restart=no "
            "${ffmpeg} -nostdin -loglevel warning -re "
            "-f lavfi -i testsrc=size=320x240:rate=25 "
            "-f lavfi -i sine=frequency=440:sample_rate=44100 "
            "-c:v libx264 -preset ultrafast -tune zerolatency -g 25 -pix_fmt yuv420p "
            "-c:a aac -b:a 64k "
            f"-f flv rtmp://server:1935/live/{key}"
        )

    def relay_state(key):
        return server.succeed(
            f"systemctl show --property=ActiveState --value neustream-relay@{key}.service"
        ).strip()

    start_all()

    with subtest("MediaMTX, the Control Plane double and the destination come up"):
        server.wait_for_unit("control-plane-double.service")
        server.wait_for_unit("mediamtx.service")
        server.wait_for_open_port(1935)
        server.wait_for_open_port(9997, "127.0.0.1")
        destination.wait_for_unit("nginx.service")
        destination.wait_for_open_port(1935)

    with subtest("the module's configuration is in place"):
        server.succeed("grep -qx 'CONTROL_PLANE_URL=http://127.0.0.1:8080' /etc/neustream/neustream.env")
        server.succeed("test \"$(stat -c '%U %a' /run/neustream/streams)\" = 'mediamtx 700'")
        server.succeed("systemctl cat neustream-relay@.service | grep -qx 'CPUQuota=40%'")
        server.succeed("test -f /etc/polkit-1/rules.d/10-nixos.rules")

    with subtest("a valid key is authenticated and relayed to its destination"):
        publisher.succeed(publish("teststream"))
        server.wait_until_succeeds(
            "journalctl -u control-plane-double.service"
            " | grep -q 'POST /api/auth/stream name=teststream auth=Bearer vm-test-token'",
            timeout=60,
        )
        server.wait_until_succeeds("systemctl is-active neustream-relay@teststream.service", timeout=60)
        server.succeed("test -f /run/neustream/streams/teststream.env")
        destination.wait_until_succeeds(
            "timeout 20 ${ffprobe} -v error -select_streams v:0 -show_entries stream=codec_name"
            " -of csv=p=0 rtmp://127.0.0.1/live/received | grep -qx h264",
            timeout=120,
        )

    with subtest("the relay runs in neustream.slice with the module's limits"):
        props = server.succeed(
            "systemctl show --property=Slice,CPUQuotaPerSecUSec,MemoryMax,Environment"
            " neustream-relay@teststream.service"
        )
        print(props)
        assert "Slice=neustream.slice" in props, props
        assert "CPUQuotaPerSecUSec=400ms" in props, props
        assert f"MemoryMax={384 * 1024 * 1024}" in props, props
        assert "NEUSTREAM_FFMPEG=${ffmpeg}" in props, props
        assert "NEUSTREAM_LOG_LEVEL=debug" in props, props

    with subtest("the relay unit is hardened (systemd-analyze security <= 2.0)"):
        report = server.succeed("systemd-analyze security --no-pager neustream-relay@teststream.service 2>&1")
        print(report)
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", report)
        assert m is not None, "no exposure level in the report"
        assert float(m.group(1)) <= 2.0, f"exposure {m.group(1)} > 2.0"

    with subtest("the relay stops with the stream and the end is reported"):
        publisher.succeed("systemctl stop publish-teststream.service")
        server.wait_until_succeeds(
            "test \"$(systemctl show --property=ActiveState --value neustream-relay@teststream.service)\" = inactive",
            timeout=60,
        )
        server.wait_until_succeeds(
            "journalctl -u control-plane-double.service"
            " | grep -q 'POST /api/auth/stream-end name=teststream'",
            timeout=60,
        )

    with subtest("an unknown key is dropped and never relayed"):
        publisher.succeed(publish("badkey"))
        server.wait_until_succeeds(
            "journalctl -u control-plane-double.service | grep -q 'POST /api/auth/stream name=badkey'",
            timeout=60,
        )
        # Kicked through MediaMTX's Control API: the publisher's ffmpeg loses its connection.
        publisher.wait_until_fails("systemctl is-active publish-badkey.service", timeout=60)
        assert relay_state("badkey") == "inactive", relay_state("badkey")
        server.fail("test -e /run/neustream/streams/badkey.env")
  '';
}
