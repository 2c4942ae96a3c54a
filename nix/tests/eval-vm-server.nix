# Must evaluate cleanly: the VM test's server machine (vm.nix), evaluated offline.
# expect: CPUQuota=40%
# expect: CONTROL_PLANE_URL=http://127.0.0.1:8080
{ ... }:
{
  imports = [ (import ./vm-nodes.nix).server ];
}
