"""A one-node Kubernetes cluster on this machine, for trying Noctis and for its end-to-end tests.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy and CoreDNS
(built by ``scripts/build-testbed.sh``) over Debian's containerd, runc and CNI plugins; the node's
address lives on a dummy interface this package creates; Services of type LoadBalancer get an
address from 127.0.0.0/8 (``loadbalancer``). ``scripts/cluster up|down|status`` and the tests'
``cluster`` fixture both drive it through ``support.cluster.cluster``.

Modules: ``layout`` (addresses, ports, paths), ``pki`` (certificates), ``configs`` (config
files), ``host`` (interfaces, sysctls, iptables, mounts, cgroups), ``components`` (the processes
and their health), ``supervisor`` (the process that owns them), ``loadbalancer``, ``images``,
``chart``, ``cluster`` (up, down, status).
"""
