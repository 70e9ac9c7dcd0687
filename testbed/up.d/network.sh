# shellcheck shell=bash
# testbed/up: the host bridge the nodes hang on, and the routes between nodes, pods and
# Services (no overlay, no NAT). Sourced by `up`; defines only functions.

check_addresses_free() {
  local used
  used=$(ip -4 -o addr show | awk -v b="$BRIDGE" '$2 != b' | grep -E " inet (10\.77\.0\.|10\.88\.)" || true)
  used+=$(ip -4 route show | grep -vE "dev ($BRIDGE|ckpt-)" | grep -E "^(10\.77\.0\.|10\.88\.)" || true)
  [ -z "$used" ] || die "10.77.0.0/24 or 10.88.0.0/16 is already in use on this host:
$used"
}

setup_bridge() {
  check_addresses_free
  ip link add "$BRIDGE" type bridge
  ip addr add "$HOST_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # With br_netfilter, bridged node<->node frames traverse the host's FORWARD chain; a
  # host firewall with policy DROP (e.g. Docker's) would cut them. Allow the bridge only.
  if command -v iptables >/dev/null 2>&1 && iptables -S FORWARD 2>/dev/null | grep -q '^-P FORWARD DROP'; then
    iptables -I FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment ckpt-testbed -j ACCEPT
    touch "$STATE/iptables-rule"
  fi
}

# Pod subnets between nodes (the bridge is one L2 segment: a route per peer, no overlay), and
# the Service range from the host through the first node's kube-proxy, so the apiserver
# reaches webhooks through their Service.
route_network() {
  local n m first
  for n in $(node_list); do
    for m in $(node_list); do
      [ "$n" = "$m" ] && continue
      node_enter "$n" ip route replace "$(node_pod_subnet "$m")" via "$(node_ip "$m")"
    done
  done
  first=$(node_list | awk '{print $1}')
  ip route replace "$SERVICE_CIDR" via "$(node_ip "$first")" dev "$BRIDGE"
}
