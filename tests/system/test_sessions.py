"""Map sessions and the online state (issue 13's first bug): a node is online while any of its
map streams is open, whatever order the server learns of a new stream and an old one's close
in. Changes are batched, so a close is taken into account with the next batch; a client that
reconnects opens its new stream before that. Before sessions were counted, the late close of
the old stream took the node offline while its new stream was live (and an ephemeral node was
then collected under it); and a stream closing right after its first map could leave the node
online for good."""

from helpers import unique
from noise_client import joined_stream
from tailnet import poll

DELAY = "2s"  # tuning.batch_change_delay: a batch is due this long after a change


def online(server, node_id):
    return next(n for n in server.cli_json("nodes", "list")
                if int(n["id"]) == node_id).get("online", False)


def told_offline(msgs, node_id):
    """Whether any of the messages told a peer that node_id went offline."""
    for m in msgs:
        for p in m.get("PeersChangedPatch") or []:
            if p.get("NodeID") == node_id and p.get("Online") is False:
                return True
        for p in (m.get("PeersChanged") or []) + (m.get("Peers") or []):
            if p.get("ID") == node_id and p.get("Online") is False:
                return True
    return False


def wait_renamed(watcher, node_id, name, seen):
    """Reads watcher's stream (keeping every message in seen) until it is told node_id's new
    name, in a delta or a full map: the batch that carried the rename has run."""
    def told():
        m = watcher.next_message(1.0)
        if m:
            seen.append(m)
        return any(p.get("ID") == node_id and p.get("Name", "").startswith(name + ".")
                   for m in seen for p in (m.get("PeersChanged") or []) + (m.get("Peers") or []))
    poll(told, 20, f"the watcher to be told node {node_id} is now {name}", interval=0)


def test_new_stream_before_old_close_is_seen_keeps_node_online(server_factory):
    s = server_factory(overrides={"tuning": {"batch_change_delay": DELAY}})
    user = s.create_user()
    key = s.cli_json("preauthkeys", "-u", str(user["id"]), "create", "--reusable",
                     "-e", "1h")["key"]
    watch_key = key
    name = unique("roamer")
    roamer, first = joined_stream(s.port, key, name)
    roamer_id = first["Node"]["ID"]
    watcher, _ = joined_stream(s.port, watch_key, unique("watcher"))
    poll(lambda: online(s, roamer_id), 20, f"{name} online")

    # A change makes the next batch due in DELAY; the roamer's old stream closes and its new
    # one opens before that batch runs.
    seen = []
    s.cli_ok("nodes", "rename", "-i", str(roamer_id), "first-" + name)
    roamer.close()
    roamer.open_stream(require_peers=False)
    wait_renamed(watcher, roamer_id, "first-" + name, seen)
    # Whatever that batch changed is told in the next one, with this second rename.
    s.cli_ok("nodes", "rename", "-i", str(roamer_id), "second-" + name)
    wait_renamed(watcher, roamer_id, "second-" + name, seen)
    assert online(s, roamer_id) is True, "the old stream's close took the node offline"
    assert not told_offline(seen, roamer_id), "peers were told the node went offline"

    # Its last stream closing still takes it offline.
    roamer.close()
    poll(lambda: online(s, roamer_id) is False, 20, "the roamer offline once it left")
    watcher.close()
