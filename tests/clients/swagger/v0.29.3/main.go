// Command hsclient drives a headscale-compatible server through a REST client that go-swagger
// generates from headscale's OpenAPI document: the kind of client headscale's Terraform
// provider is built on (tests/lib/install-swagger-client.sh generates it next to this file,
// in the cache). It makes the calls the provider makes, on users, pre-auth keys, API keys,
// nodes, tags, routes and the policy, plus a few that must fail, and checks that every answer
// decodes into the generated types, passes their Validate, and says what was done.
//
// Prints one JSON line per step ({"step", "ok", "detail"}) and exits 1 if any step failed.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/go-openapi/strfmt"

	hs "hsclient/internal/gen/client/headscale_service"
	"hsclient/internal/gen/models"
)

type opts struct {
	endpoint, key, prefix, route, authID, authID2 string
	router                                        string
}

type run struct {
	report
	o   opts
	api hs.ClientService
	ctx context.Context

	userID, userName, userEmail string
	policy                      string
}

func (r *run) health() {
	r.step("health", func() (string, error) {
		resp, err := r.api.HeadscaleServiceHealth(hs.NewHeadscaleServiceHealthParams().WithContext(r.ctx))
		if err != nil {
			return "", err
		}
		if !resp.Payload.DatabaseConnectivity {
			return "", errors.New("databaseConnectivity is false")
		}
		return "database reachable", valid(resp.Payload)
	})
}

func (r *run) policies() {
	r.policy = fmt.Sprintf(`{
  // written by the swagger client
  "tagOwners": {"tag:ci": ["%s@"]},
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]
}`, r.o.prefix+"-owner")
	r.step("policy.set", func() (string, error) {
		resp, err := r.api.HeadscaleServiceSetPolicy(hs.NewHeadscaleServiceSetPolicyParams().
			WithContext(r.ctx).WithBody(&models.V1SetPolicyRequest{Policy: r.policy}))
		if err != nil {
			return "", err
		}
		if resp.Payload.Policy != r.policy || time.Time(resp.Payload.UpdatedAt).IsZero() {
			return "", fmt.Errorf("answer %+v", resp.Payload)
		}
		return "updatedAt " + resp.Payload.UpdatedAt.String(), valid(resp.Payload)
	})
	r.step("policy.get", func() (string, error) {
		resp, err := r.api.HeadscaleServiceGetPolicy(hs.NewHeadscaleServiceGetPolicyParams().WithContext(r.ctx))
		if err != nil {
			return "", err
		}
		if resp.Payload.Policy != r.policy {
			return "", fmt.Errorf("policy %q, want what was set", resp.Payload.Policy)
		}
		return "as set", valid(resp.Payload)
	})
	r.step("policy.check", func() (string, error) {
		resp, err := r.api.HeadscaleServiceCheckPolicy(hs.NewHeadscaleServiceCheckPolicyParams().
			WithContext(r.ctx).WithBody(&models.V1CheckPolicyRequest{Policy: r.policy}))
		if err != nil {
			return "", err
		}
		return "accepted", valid(resp.Payload)
	})
	r.step("policy.check-bad", func() (string, error) {
		_, err := r.api.HeadscaleServiceCheckPolicy(hs.NewHeadscaleServiceCheckPolicyParams().
			WithContext(r.ctx).WithBody(&models.V1CheckPolicyRequest{Policy: `{"acls": [`}))
		return decodedFailure(err)
	})
}

// findUser is the provider's GetUser: a filtered list that must hold exactly the one user.
func (r *run) findUser(p *hs.HeadscaleServiceListUsersParams) (*models.V1User, error) {
	resp, err := r.api.HeadscaleServiceListUsers(p.WithContext(r.ctx))
	if err != nil {
		return nil, err
	}
	if err := valid(resp.Payload); err != nil {
		return nil, err
	}
	if len(resp.Payload.Users) != 1 || resp.Payload.Users[0].ID != r.userID {
		return nil, fmt.Errorf("want only user %s, got %d users", r.userID, len(resp.Payload.Users))
	}
	return resp.Payload.Users[0], nil
}

func (r *run) users() {
	r.userName = r.o.prefix + "-u"
	r.userEmail = r.o.prefix + "@example.com"
	r.step("user.create", func() (string, error) {
		resp, err := r.api.HeadscaleServiceCreateUser(hs.NewHeadscaleServiceCreateUserParams().
			WithContext(r.ctx).WithBody(&models.V1CreateUserRequest{Name: r.userName,
			Email: r.userEmail, DisplayName: "Swagger Client", PictureURL: "https://example.com/p.png"}))
		if err != nil {
			return "", err
		}
		u := resp.Payload.User
		if u == nil || u.ID == "" || u.Name != r.userName || u.Email != r.userEmail ||
			u.DisplayName != "Swagger Client" || u.ProfilePicURL != "https://example.com/p.png" {
			return "", fmt.Errorf("answer %+v", u)
		}
		r.userID = u.ID
		return "id " + u.ID, valid(resp.Payload)
	})
	r.step("user.create-duplicate", func() (string, error) {
		_, err := r.api.HeadscaleServiceCreateUser(hs.NewHeadscaleServiceCreateUserParams().
			WithContext(r.ctx).WithBody(&models.V1CreateUserRequest{Name: r.userName}))
		return decodedFailure(err)
	})
	r.step("user.list", func() (string, error) {
		resp, err := r.api.HeadscaleServiceListUsers(hs.NewHeadscaleServiceListUsersParams().WithContext(r.ctx))
		if err != nil {
			return "", err
		}
		if !slices.ContainsFunc(resp.Payload.Users, func(u *models.V1User) bool { return u.ID == r.userID }) {
			return "", errors.New("the new user is not listed")
		}
		return fmt.Sprintf("%d users", len(resp.Payload.Users)), valid(resp.Payload)
	})
	for _, by := range []string{"name", "id", "email"} {
		r.step("user.get-by-"+by, func() (string, error) {
			p := hs.NewHeadscaleServiceListUsersParams()
			switch by {
			case "name":
				p.SetName(&r.userName)
			case "id":
				p.SetID(&r.userID)
			default:
				p.SetEmail(&r.userEmail)
			}
			_, err := r.findUser(p)
			return "one user", err
		})
	}
	r.step("user.rename", func() (string, error) {
		newName := r.o.prefix + "-owner"
		resp, err := r.api.HeadscaleServiceRenameUser(hs.NewHeadscaleServiceRenameUserParams().
			WithContext(r.ctx).WithOldID(r.userID).WithNewName(newName))
		if err != nil {
			return "", err
		}
		if resp.Payload.User == nil || resp.Payload.User.Name != newName {
			return "", fmt.Errorf("answer %+v", resp.Payload.User)
		}
		r.userName = newName
		return "now " + newName, valid(resp.Payload)
	})
}

func (r *run) listKeys() ([]*models.V1PreAuthKey, error) {
	resp, err := r.api.HeadscaleServiceListPreAuthKeys(hs.NewHeadscaleServiceListPreAuthKeysParams().WithContext(r.ctx))
	if err != nil {
		return nil, err
	}
	return resp.Payload.PreAuthKeys, valid(resp.Payload)
}

func findKey(keys []*models.V1PreAuthKey, id string) *models.V1PreAuthKey {
	i := slices.IndexFunc(keys, func(k *models.V1PreAuthKey) bool { return k.ID == id })
	if i < 0 {
		return nil
	}
	return keys[i]
}

func (r *run) preAuthKeys() {
	var userKey, tagKey string
	expiry := strfmt.DateTime(time.Now().Add(time.Hour).UTC())
	r.step("preauthkey.create", func() (string, error) {
		resp, err := r.api.HeadscaleServiceCreatePreAuthKey(hs.NewHeadscaleServiceCreatePreAuthKeyParams().
			WithContext(r.ctx).WithBody(&models.V1CreatePreAuthKeyRequest{User: r.userID,
			Reusable: true, Expiration: expiry}))
		if err != nil {
			return "", err
		}
		k := resp.Payload.PreAuthKey
		if k == nil || k.ID == "" || k.Key == "" || !k.Reusable || k.User == nil || k.User.ID != r.userID {
			return "", fmt.Errorf("answer %+v", k)
		}
		userKey = k.ID
		return "id " + k.ID, valid(resp.Payload)
	})
	r.step("preauthkey.create-tagged", func() (string, error) {
		resp, err := r.api.HeadscaleServiceCreatePreAuthKey(hs.NewHeadscaleServiceCreatePreAuthKeyParams().
			WithContext(r.ctx).WithBody(&models.V1CreatePreAuthKeyRequest{ACLTags: []string{"tag:ci"},
			Expiration: expiry}))
		if err != nil {
			return "", err
		}
		k := resp.Payload.PreAuthKey
		if k == nil || k.ID == "" || !slices.Equal(k.ACLTags, []string{"tag:ci"}) {
			return "", fmt.Errorf("answer %+v", k)
		}
		tagKey = k.ID
		return "id " + k.ID, valid(resp.Payload)
	})
	r.step("preauthkey.list", func() (string, error) {
		keys, err := r.listKeys()
		if err != nil {
			return "", err
		}
		// The provider filters by owner on its side.
		mine := slices.DeleteFunc(slices.Clone(keys), func(k *models.V1PreAuthKey) bool {
			return k.User == nil || (k.User.ID != r.userID && k.User.Name != r.userName)
		})
		if len(mine) != 1 || mine[0].ID != userKey || findKey(keys, tagKey) == nil {
			return "", fmt.Errorf("%d keys of the user, tagged key listed: %v", len(mine), findKey(keys, tagKey) != nil)
		}
		return fmt.Sprintf("%d keys", len(keys)), nil
	})
	r.step("preauthkey.expire", func() (string, error) {
		resp, err := r.api.HeadscaleServiceExpirePreAuthKey(hs.NewHeadscaleServiceExpirePreAuthKeyParams().
			WithContext(r.ctx).WithBody(&models.V1ExpirePreAuthKeyRequest{ID: userKey}))
		if err != nil {
			return "", err
		}
		if err := valid(resp.Payload); err != nil {
			return "", err
		}
		keys, err := r.listKeys()
		if err != nil {
			return "", err
		}
		k := findKey(keys, userKey)
		if k == nil || time.Time(k.Expiration).After(time.Now()) {
			return "", fmt.Errorf("listed after expiry as %+v", k)
		}
		return "expiration " + k.Expiration.String(), nil
	})
	r.step("preauthkey.delete", func() (string, error) {
		resp, err := r.api.HeadscaleServiceDeletePreAuthKey(hs.NewHeadscaleServiceDeletePreAuthKeyParams().
			WithContext(r.ctx).WithID(&tagKey))
		if err != nil {
			return "", err
		}
		keys, err := r.listKeys()
		if err == nil && findKey(keys, tagKey) != nil {
			err = errors.New("still listed")
		}
		if err != nil {
			return "", err
		}
		return "gone", valid(resp.Payload)
	})
}

func (r *run) listAPIKeys() ([]*models.V1APIKey, error) {
	resp, err := r.api.HeadscaleServiceListAPIKeys(hs.NewHeadscaleServiceListAPIKeysParams().WithContext(r.ctx))
	if err != nil {
		return nil, err
	}
	return resp.Payload.APIKeys, valid(resp.Payload)
}

// createAPIKey makes a key and finds its row in the list by the prefix the key starts with.
func (r *run) createAPIKey() (*models.V1APIKey, error) {
	expiry := strfmt.DateTime(time.Now().Add(time.Hour).UTC())
	resp, err := r.api.HeadscaleServiceCreateAPIKey(hs.NewHeadscaleServiceCreateAPIKeyParams().
		WithContext(r.ctx).WithBody(&models.V1CreateAPIKeyRequest{Expiration: expiry}))
	if err != nil {
		return nil, err
	}
	if err := valid(resp.Payload); err != nil {
		return nil, err
	}
	keys, err := r.listAPIKeys()
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if k.Prefix != "" && strings.HasPrefix(resp.Payload.APIKey, strings.TrimSuffix(k.Prefix, "***")) &&
			time.Time(k.Expiration).After(time.Now()) {
			return k, nil
		}
	}
	return nil, fmt.Errorf("no listed key is a prefix of the new key (%d keys)", len(keys))
}

func (r *run) expiredNow(id string) error {
	keys, err := r.listAPIKeys()
	if err != nil {
		return err
	}
	i := slices.IndexFunc(keys, func(k *models.V1APIKey) bool { return k.ID == id })
	if i < 0 || time.Time(keys[i].Expiration).After(time.Now()) {
		return fmt.Errorf("key %s not listed as expired", id)
	}
	return nil
}

func (r *run) apiKeys() {
	for _, by := range []string{"prefix", "id"} {
		r.step("apikey.expire-by-"+by, func() (string, error) {
			k, err := r.createAPIKey()
			if err != nil {
				return "", err
			}
			body := &models.V1ExpireAPIKeyRequest{Prefix: k.Prefix}
			if by == "id" {
				body = &models.V1ExpireAPIKeyRequest{ID: k.ID}
			}
			resp, err := r.api.HeadscaleServiceExpireAPIKey(hs.NewHeadscaleServiceExpireAPIKeyParams().
				WithContext(r.ctx).WithBody(body))
			if err == nil {
				err = valid(resp.Payload)
			}
			if err == nil {
				err = r.expiredNow(k.ID)
			}
			return "key " + k.ID, err
		})
	}
	r.step("apikey.delete", func() (string, error) {
		k, err := r.createAPIKey()
		if err != nil {
			return "", err
		}
		resp, err := r.api.HeadscaleServiceDeleteAPIKey(hs.NewHeadscaleServiceDeleteAPIKeyParams().
			WithContext(r.ctx).WithPrefix(k.Prefix))
		if err != nil {
			return "", err
		}
		keys, err := r.listAPIKeys()
		if err == nil && slices.ContainsFunc(keys, func(x *models.V1APIKey) bool { return x.ID == k.ID }) {
			err = errors.New("still listed")
		}
		if err != nil {
			return "", err
		}
		return "key " + k.ID + " gone", valid(resp.Payload)
	})
}

func (r *run) getNode(id string) (*models.V1Node, error) {
	resp, err := r.api.HeadscaleServiceGetNode(hs.NewHeadscaleServiceGetNodeParams().WithContext(r.ctx).WithNodeID(id))
	if err != nil {
		return nil, err
	}
	return resp.Payload.Node, valid(resp.Payload)
}

// routeEnabled is the provider's ListDeviceRoutes: a route is an announced prefix, enabled
// when it is approved.
func (r *run) routeEnabled() (bool, error) {
	n, err := r.getNode(r.o.router)
	if err != nil {
		return false, err
	}
	if !slices.Contains(n.AvailableRoutes, r.o.route) {
		return false, fmt.Errorf("node %s does not list %s as available: %v", n.ID, r.o.route, n.AvailableRoutes)
	}
	return slices.Contains(n.ApprovedRoutes, r.o.route), nil
}

func (r *run) nodes() {
	var owner string
	r.step("node.get", func() (string, error) {
		n, err := r.getNode(r.o.router)
		if err != nil {
			return "", err
		}
		if n.ID != r.o.router || n.User == nil || n.User.Name == "" || len(n.IPAddresses) == 0 ||
			n.MachineKey == "" || n.NodeKey == "" {
			return "", fmt.Errorf("answer %+v", n)
		}
		owner = n.User.Name
		return n.GivenName + " of " + owner, nil
	})
	r.step("node.list", func() (string, error) {
		for _, user := range []*string{nil, &owner} {
			resp, err := r.api.HeadscaleServiceListNodes(hs.NewHeadscaleServiceListNodesParams().
				WithContext(r.ctx).WithUser(user))
			if err != nil {
				return "", err
			}
			if err := valid(resp.Payload); err != nil {
				return "", err
			}
			if !slices.ContainsFunc(resp.Payload.Nodes, func(n *models.V1Node) bool { return n.ID == r.o.router }) {
				return "", fmt.Errorf("router not listed (user filter %v)", user != nil)
			}
		}
		return "listed, also by user", nil
	})
	r.step("node.routes-announced", func() (string, error) {
		on, err := r.routeEnabled()
		if err == nil && on {
			err = errors.New("approved before approval")
		}
		return "available, not approved", err
	})
	r.step("node.approve-routes", func() (string, error) {
		resp, err := r.api.HeadscaleServiceSetApprovedRoutes(hs.NewHeadscaleServiceSetApprovedRoutesParams().
			WithContext(r.ctx).WithNodeID(r.o.router).
			WithBody(&models.HeadscaleServiceSetApprovedRoutesBody{Routes: []string{r.o.route}}))
		if err != nil {
			return "", err
		}
		if resp.Payload.Node == nil || !slices.Contains(resp.Payload.Node.ApprovedRoutes, r.o.route) {
			return "", fmt.Errorf("answer %+v", resp.Payload.Node)
		}
		if on, err := r.routeEnabled(); err != nil || !on {
			return "", fmt.Errorf("not enabled after approval (%v)", err)
		}
		return "approved", valid(resp.Payload)
	})
	r.step("node.unapprove-routes", func() (string, error) {
		resp, err := r.api.HeadscaleServiceSetApprovedRoutes(hs.NewHeadscaleServiceSetApprovedRoutesParams().
			WithContext(r.ctx).WithNodeID(r.o.router).
			WithBody(&models.HeadscaleServiceSetApprovedRoutesBody{Routes: []string{}}))
		if err != nil {
			return "", err
		}
		if on, err := r.routeEnabled(); err != nil || on {
			return "", fmt.Errorf("still enabled (%v)", err)
		}
		return "withdrawn", valid(resp.Payload)
	})
	r.step("node.rename", func() (string, error) {
		name := r.o.prefix + "-node"
		resp, err := r.api.HeadscaleServiceRenameNode(hs.NewHeadscaleServiceRenameNodeParams().
			WithContext(r.ctx).WithNodeID(r.o.router).WithNewName(name))
		if err != nil {
			return "", err
		}
		if resp.Payload.Node == nil || resp.Payload.Node.GivenName != name {
			return "", fmt.Errorf("answer %+v", resp.Payload.Node)
		}
		return "now " + name, valid(resp.Payload)
	})
	r.step("node.expire-later", func() (string, error) {
		when := strfmt.DateTime(time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second))
		resp, err := r.api.HeadscaleServiceExpireNode(hs.NewHeadscaleServiceExpireNodeParams().
			WithContext(r.ctx).WithNodeID(r.o.router).WithExpiry(&when))
		if err != nil {
			return "", err
		}
		n := resp.Payload.Node
		if n == nil || !time.Time(n.Expiry).Equal(time.Time(when)) {
			return "", fmt.Errorf("expiry %v, want %v", n.Expiry, when)
		}
		return "expiry " + n.Expiry.String(), valid(resp.Payload)
	})
	r.step("node.expire-never", func() (string, error) {
		never := true
		resp, err := r.api.HeadscaleServiceExpireNode(hs.NewHeadscaleServiceExpireNodeParams().
			WithContext(r.ctx).WithNodeID(r.o.router).WithDisableExpiry(&never))
		if err != nil {
			return "", err
		}
		if n := resp.Payload.Node; n == nil || (!time.Time(n.Expiry).IsZero() && time.Time(n.Expiry).Year() > 1) {
			return "", fmt.Errorf("expiry still set: %+v", n)
		}
		return "no expiry", valid(resp.Payload)
	})
	r.step("node.tag", func() (string, error) {
		resp, err := r.api.HeadscaleServiceSetTags(hs.NewHeadscaleServiceSetTagsParams().
			WithContext(r.ctx).WithNodeID(r.o.router).
			WithBody(&models.HeadscaleServiceSetTagsBody{Tags: []string{"tag:ci"}}))
		if err != nil {
			return "", err
		}
		if resp.Payload.Node == nil || !slices.Equal(resp.Payload.Node.Tags, []string{"tag:ci"}) {
			return "", fmt.Errorf("answer %+v", resp.Payload.Node)
		}
		return "tag:ci", valid(resp.Payload)
	})
}

// registered checks that a registration answer (payload) gives a node of the run's user, n,
// and adds it to ids.
func (r *run) registered(n *models.V1Node, payload any, ids *[]string) (string, error) {
	if n == nil || n.ID == "" || n.User == nil || n.User.Name != r.userName {
		return "", fmt.Errorf("answer %+v", n)
	}
	*ids = append(*ids, n.ID)
	return "node " + n.ID, valid(payload)
}

// registrations completes the two pending logins: one the provider's way (RegisterNode), one
// the 0.29 way (AuthRegister); then deletes both nodes.
func (r *run) registrations() {
	var ids []string
	r.step("node.register", func() (string, error) {
		resp, err := r.api.HeadscaleServiceRegisterNode(hs.NewHeadscaleServiceRegisterNodeParams().
			WithContext(r.ctx).WithUser(&r.userName).WithKey(&r.o.authID))
		if err != nil {
			return "", err
		}
		return r.registered(resp.Payload.Node, resp.Payload, &ids)
	})
	r.step("auth.register", func() (string, error) {
		resp, err := r.api.HeadscaleServiceAuthRegister(hs.NewHeadscaleServiceAuthRegisterParams().
			WithContext(r.ctx).WithBody(&models.V1AuthRegisterRequest{AuthID: r.o.authID2, User: r.userName}))
		if err != nil {
			return "", err
		}
		return r.registered(resp.Payload.Node, resp.Payload, &ids)
	})
	r.pendingLogins()
	r.step("node.delete", func() (string, error) {
		for _, id := range ids {
			resp, err := r.api.HeadscaleServiceDeleteNode(hs.NewHeadscaleServiceDeleteNodeParams().
				WithContext(r.ctx).WithNodeID(id))
			if err == nil {
				err = valid(resp.Payload)
			}
			if err != nil {
				return "", err
			}
			if _, err := r.getNode(id); err == nil {
				return "", fmt.Errorf("node %s still there", id)
			} else if _, err := failure(err, 404, 5); err != nil {
				return "", fmt.Errorf("node %s after delete: %w", id, err)
			}
		}
		return fmt.Sprintf("%d nodes", len(ids)), nil
	})
}

// pendingLogins makes up a pending login (DebugCreateNode) and refuses it (AuthReject), then
// asks for the address backfill, confirmed and not.
func (r *run) pendingLogins() {
	key := "hskey-authreq-" + rand.Text()[:24]
	name := r.o.prefix + "-dbg"
	r.step("debug.create-node", func() (string, error) {
		resp, err := r.api.HeadscaleServiceDebugCreateNode(hs.NewHeadscaleServiceDebugCreateNodeParams().
			WithContext(r.ctx).WithBody(&models.V1DebugCreateNodeRequest{User: r.userName, Key: key,
			Name: name, Routes: []string{"10.78.0.0/24"}}))
		if err != nil {
			return "", err
		}
		if n := resp.Payload.Node; n == nil || n.Name != name {
			return "", fmt.Errorf("answer %+v", resp.Payload.Node)
		}
		return "pending " + key, valid(resp.Payload)
	})
	r.step("auth.reject", func() (string, error) {
		resp, err := r.api.HeadscaleServiceAuthReject(hs.NewHeadscaleServiceAuthRejectParams().
			WithContext(r.ctx).WithBody(&models.V1AuthRejectRequest{AuthID: key}))
		if err != nil {
			return "", err
		}
		return "refused", valid(resp.Payload)
	})
	r.step("node.backfill-ips", func() (string, error) {
		yes := true
		resp, err := r.api.HeadscaleServiceBackfillNodeIPs(hs.NewHeadscaleServiceBackfillNodeIPsParams().
			WithContext(r.ctx).WithConfirmed(&yes))
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%d changes", len(resp.Payload.Changes)), valid(resp.Payload)
	})
	r.step("node.backfill-ips-unconfirmed", func() (string, error) {
		no := false
		_, err := r.api.HeadscaleServiceBackfillNodeIPs(hs.NewHeadscaleServiceBackfillNodeIPsParams().
			WithContext(r.ctx).WithConfirmed(&no))
		return decodedFailure(err)
	})
}

func (r *run) errors() {
	r.step("error.node-not-found", func() (string, error) {
		_, err := r.getNode("987654321")
		return failure(err, 404, 5)
	})
	r.step("error.bad-api-key", func() (string, error) { return badAPIKey(r.ctx, r.o.endpoint) })
}

func (r *run) cleanup() {
	r.step("user.delete", func() (string, error) {
		resp, err := r.api.HeadscaleServiceDeleteUser(hs.NewHeadscaleServiceDeleteUserParams().
			WithContext(r.ctx).WithID(r.userID))
		if err != nil {
			return "", err
		}
		p := hs.NewHeadscaleServiceListUsersParams()
		p.SetID(&r.userID)
		if u, err := r.findUser(p); err == nil {
			return "", fmt.Errorf("user %s still listed", u.ID)
		}
		return "gone", valid(resp.Payload)
	})
}

func main() {
	var o opts
	flag.StringVar(&o.endpoint, "endpoint", "", "server base URL, e.g. http://127.0.0.1:8080")
	flag.StringVar(&o.key, "key", "", "API key")
	flag.StringVar(&o.prefix, "prefix", "swg", "prefix of the names this run creates")
	flag.StringVar(&o.router, "router", "", "ID of a node that announces -route")
	flag.StringVar(&o.route, "route", "", "a prefix the -router node announces")
	flag.StringVar(&o.authID, "auth-id", "", "a pending interactive login, for RegisterNode")
	flag.StringVar(&o.authID2, "auth-id2", "", "another pending login, for AuthRegister")
	flag.Parse()
	if o.endpoint == "" || o.key == "" || o.router == "" || o.route == "" || o.authID == "" || o.authID2 == "" {
		fmt.Fprintln(os.Stderr, "hsclient: -endpoint, -key, -router, -route, -auth-id and -auth-id2 are required")
		os.Exit(2)
	}
	api, ctx, cancel := connect(o.endpoint, o.key)
	defer cancel()
	r := &run{o: o, api: api, ctx: ctx}
	r.health()
	r.users()
	r.policies()
	r.preAuthKeys()
	r.apiKeys()
	r.nodes()
	r.registrations()
	r.errors()
	r.cleanup()
	if r.failed {
		os.Exit(1)
	}
}
