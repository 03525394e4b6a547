# sos report plugin collecting MetalK8s state (installed by metalk8s-sosreport).
from sos.report.plugins import Plugin, RedHatPlugin


class MetalK8s(Plugin, RedHatPlugin):
    """MetalK8s cluster information"""

    plugin_name = "metalk8s"
    packages = ("metalk8s-sosreport",)

    def setup(self):
        self.add_copy_spec([
            "/etc/metalk8s",
            "/var/log/metalk8s",
            "/etc/kubernetes/manifests",
        ])
        self.add_cmd_output([
            "kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes -o wide",
            "kubectl --kubeconfig /etc/kubernetes/admin.conf get pods -A -o wide",
            "salt-call --local grains.items",
        ])
