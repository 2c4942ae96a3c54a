# The machines of the VM test (vm.nix). Kept in their own file so that the server can also be
# evaluated offline: nix/tests/eval-vm-server.nix imports `server` for nixos-eval.sh.
# `server` does not import the module itself: vm.nix (and nixos-eval.sh) add nix/module.nix.
{
  # MediaMTX + services.neustream, and a Control Plane double on 127.0.0.1:8080.
  server =
    { lib, pkgs, ... }:
    let
      # The three Control Plane endpoints the hooks use (see the Control Plane contract). It
      # logs one line per request to its journal; the test script greps them.
      controlPlaneDouble = pkgs.writeText "control-plane-double.py" ''
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, urlsplit

        VALID_KEYS = {"teststream"}
        DESTINATION = {
            "platform": "custom",
            "rtmp_url": "rtmp://destination/live/",
            "stream_key": "received",
        }


        class ControlPlane(BaseHTTPRequestHandler):
            def reply(self, code, body, content_type="text/plain"):
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def note(self, path, key):
                auth = self.headers.get("Authorization", "-")
                print(f"{self.command} {path} name={key} auth={auth}", flush=True)

            def do_POST(self):
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                form.update(parse_qs(url.query))
                key = form.get("name", [""])[0]
                self.note(url.path, key)
                if url.path == "/api/auth/stream":
                    if key in VALID_KEYS:
                        self.reply(200, "OK")
                    else:
                        self.reply(401, "Invalid stream key")
                elif url.path == "/api/auth/stream-end":
                    self.reply(200, "OK")
                else:
                    self.reply(404, "Not found")

            def do_GET(self):
                url = urlsplit(self.path)
                prefix = "/api/streams/forwarding/"
                key = url.path[len(prefix):] if url.path.startswith(prefix) else ""
                self.note(url.path, key)
                if key in VALID_KEYS:
                    body = {
                        "streamKey": key,
                        "sourceId": 1,
                        "userId": 1,
                        "sourceName": "VM test",
                        "destinations": [DESTINATION],
                        "pushConfig": [],
                    }
                    self.reply(200, json.dumps(body), "application/json")
                else:
                    self.reply(404, json.dumps({"error": "Stream key not found"}), "application/json")

            def log_message(self, *args):
                pass


        ThreadingHTTPServer(("127.0.0.1", 8080), ControlPlane).serve_forever()
      '';
    in
    {
      services.neustream = {
        enable = true;
        # Loopback: plain http:// is accepted without NEUSTREAM_ALLOW_INSECURE_CONTROL_PLANE.
        controlPlaneUrl = "http://127.0.0.1:8080";
        environmentFile = "/run/secrets/neustream.env";
        openFirewall = true;
        relay.cpuQuota = "40%";
        relay.memoryMax = "384M";
        settings.NEUSTREAM_LOG_LEVEL = "debug";
      };

      # The secret file, written at boot outside the store as agenix or sops-nix would.
      systemd.tmpfiles.rules = [
        "d /run/secrets 0700 root root -"
        "f /run/secrets/neustream.env 0600 root root - CONTROL_PLANE_TOKEN=vm-test-token"
      ];

      systemd.services.control-plane-double = {
        description = "Neustream Control Plane double";
        wantedBy = [ "multi-user.target" ];
        before = [ "mediamtx.service" ];
        serviceConfig = {
          ExecStart = "${lib.getExe pkgs.python3} ${controlPlaneDouble}";
          DynamicUser = true;
        };
      };

      environment.systemPackages = [ pkgs.ffmpeg-headless ];
    };

  # The RTMP destination: nginx with the rtmp module, playable as rtmp://destination/live/<key>.
  destination =
    { pkgs, ... }:
    {
      services.nginx = {
        enable = true;
        additionalModules = [ pkgs.nginxModules.rtmp ];
        appendConfig = ''
          rtmp {
            server {
              listen 1935;
              application live {
                live on;
              }
            }
          }
        '';
      };
      networking.firewall.allowedTCPPorts = [ 1935 ];
      environment.systemPackages = [ pkgs.ffmpeg-headless ];
    };

  # The streamer: ffmpeg publishing a test pattern to rtmp://server/live/<key>.
  publisher =
    { pkgs, ... }:
    {
      environment.systemPackages = [ pkgs.ffmpeg-headless ];
    };
}
