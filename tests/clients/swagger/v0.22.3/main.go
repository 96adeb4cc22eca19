// Command hsclient drives a headscale-compatible server through the REST client go-swagger
// generates from headscale v0.22.3's OpenAPI document, as the Terraform provider's first
// releases did: users by name, pre-auth keys by user name, API keys, machines (made with the
// debug call and registered), their tags and owner, the routes of a node that announces one
// (-router, -route) by route ID, plus calls that must fail. Every answer must decode into the generated types and pass their Validate.
//
// Prints one JSON line per step ({"step", "ok", "detail"}) and exits 1 if any step failed.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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

type run struct {
	report
	api              hs.ClientService
	ctx              context.Context
	endpoint, prefix string
	router, route    string

	user, other, machine string
}

func (r *run) users() {
	r.user, r.other = r.prefix+"-a", r.prefix+"-b"
	r.step("user.create", func() (string, error) {
		for _, name := range []string{r.user, r.other} {
			resp, err := r.api.HeadscaleServiceCreateUser(hs.NewHeadscaleServiceCreateUserParams().
				WithContext(r.ctx).WithBody(&models.V1CreateUserRequest{Name: name}))
			if err != nil {
				return "", err
			}
			if resp.Payload.User == nil || resp.Payload.User.Name != name {
				return "", fmt.Errorf("answer %+v", resp.Payload.User)
			}
			if err := valid(resp.Payload); err != nil {
				return "", err
			}
		}
		return "two users", nil
	})
	r.step("user.get", func() (string, error) {
		resp, err := r.api.HeadscaleServiceGetUser(hs.NewHeadscaleServiceGetUserParams().
			WithContext(r.ctx).WithName(r.user))
		if err != nil {
			return "", err
		}
		if resp.Payload.User == nil || resp.Payload.User.Name != r.user {
			return "", fmt.Errorf("answer %+v", resp.Payload.User)
		}
		return "id " + resp.Payload.User.ID, valid(resp.Payload)
	})
	r.step("user.list", func() (string, error) {
		resp, err := r.api.HeadscaleServiceListUsers(hs.NewHeadscaleServiceListUsersParams().WithContext(r.ctx))
		if err != nil {
			return "", err
		}
		if !slices.ContainsFunc(resp.Payload.Users, func(u *models.V1User) bool { return u.Name == r.user }) {
			return "", fmt.Errorf("%s not listed", r.user)
		}
		return fmt.Sprintf("%d users", len(resp.Payload.Users)), valid(resp.Payload)
	})
	r.step("user.rename", func() (string, error) {
		name := r.prefix + "-c"
		resp, err := r.api.HeadscaleServiceRenameUser(hs.NewHeadscaleServiceRenameUserParams().
			WithContext(r.ctx).WithOldName(r.user).WithNewName(name))
		if err != nil {
			return "", err
		}
		if resp.Payload.User == nil || resp.Payload.User.Name != name {
			return "", fmt.Errorf("answer %+v", resp.Payload.User)
		}
		r.user = name
		return "now " + name, valid(resp.Payload)
	})
}

func (r *run) preAuthKeys() {
	var key, id string
	r.step("preauthkey.create", func() (string, error) {
		resp, err := r.api.HeadscaleServiceCreatePreAuthKey(hs.NewHeadscaleServiceCreatePreAuthKeyParams().
			WithContext(r.ctx).WithBody(&models.V1CreatePreAuthKeyRequest{User: r.user, Reusable: true,
			Expiration: strfmt.DateTime(time.Now().Add(time.Hour).UTC())}))
		if err != nil {
			return "", err
		}
		k := resp.Payload.PreAuthKey
		if k == nil || k.Key == "" || k.User != r.user || !k.Reusable {
			return "", fmt.Errorf("answer %+v", k)
		}
		key, id = k.Key, k.ID
		return "id " + k.ID, valid(resp.Payload)
	})
	list := func() (*models.V1PreAuthKey, error) {
		resp, err := r.api.HeadscaleServiceListPreAuthKeys(hs.NewHeadscaleServiceListPreAuthKeysParams().
			WithContext(r.ctx).WithUser(&r.user))
		if err != nil {
			return nil, err
		}
		// Matched by ID: a server that keeps only a hash of the key lists its prefix.
		if len(resp.Payload.PreAuthKeys) != 1 || resp.Payload.PreAuthKeys[0].ID != id {
			return nil, fmt.Errorf("want the one key of %s, got %d", r.user, len(resp.Payload.PreAuthKeys))
		}
		return resp.Payload.PreAuthKeys[0], valid(resp.Payload)
	}
	r.step("preauthkey.list", func() (string, error) {
		_, err := list()
		return "the user's key", err
	})
	r.step("preauthkey.expire", func() (string, error) {
		resp, err := r.api.HeadscaleServiceExpirePreAuthKey(hs.NewHeadscaleServiceExpirePreAuthKeyParams().
			WithContext(r.ctx).WithBody(&models.V1ExpirePreAuthKeyRequest{User: r.user, Key: key}))
		if err == nil {
			err = valid(resp.Payload)
		}
		if err != nil {
			return "", err
		}
		k, err := list()
		if err == nil && time.Time(k.Expiration).After(time.Now()) {
			err = fmt.Errorf("expiration %v still ahead", k.Expiration)
		}
		return "expired", err
	})
}

func (r *run) apiKeys() {
	r.step("apikey.create-list-expire", func() (string, error) {
		resp, err := r.api.HeadscaleServiceCreateAPIKey(hs.NewHeadscaleServiceCreateAPIKeyParams().
			WithContext(r.ctx).WithBody(&models.V1CreateAPIKeyRequest{
			Expiration: strfmt.DateTime(time.Now().Add(time.Hour).UTC())}))
		if err != nil {
			return "", err
		}
		list, err := r.api.HeadscaleServiceListAPIKeys(hs.NewHeadscaleServiceListAPIKeysParams().WithContext(r.ctx))
		if err != nil {
			return "", err
		}
		var prefix string
		for _, k := range list.Payload.APIKeys {
			if k.Prefix != "" && strings.HasPrefix(resp.Payload.APIKey, strings.TrimSuffix(k.Prefix, "***")) {
				prefix = k.Prefix
			}
		}
		if prefix == "" {
			return "", fmt.Errorf("no listed prefix starts the new key")
		}
		_, err = r.api.HeadscaleServiceExpireAPIKey(hs.NewHeadscaleServiceExpireAPIKeyParams().
			WithContext(r.ctx).WithBody(&models.V1ExpireAPIKeyRequest{Prefix: prefix}))
		return "prefix " + prefix, err
	})
}

func (r *run) getMachine() (*models.V1Machine, error) {
	resp, err := r.api.HeadscaleServiceGetMachine(hs.NewHeadscaleServiceGetMachineParams().
		WithContext(r.ctx).WithMachineID(r.machine))
	if err != nil {
		return nil, err
	}
	return resp.Payload.Machine, valid(resp.Payload)
}

func (r *run) machines() {
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	key := "nodekey:" + hex.EncodeToString(raw)
	name := r.prefix + "-m"
	r.step("machine.debug-create", func() (string, error) {
		resp, err := r.api.HeadscaleServiceDebugCreateMachine(hs.NewHeadscaleServiceDebugCreateMachineParams().
			WithContext(r.ctx).WithBody(&models.V1DebugCreateMachineRequest{User: r.user, Key: key,
			Name: name}))
		if err != nil {
			return "", err
		}
		return "pending", valid(resp.Payload)
	})
	r.step("machine.register", func() (string, error) {
		resp, err := r.api.HeadscaleServiceRegisterMachine(hs.NewHeadscaleServiceRegisterMachineParams().
			WithContext(r.ctx).WithUser(&r.user).WithKey(&key))
		if err != nil {
			return "", err
		}
		m := resp.Payload.Machine
		if m == nil || m.ID == "" || m.User == nil || m.User.Name != r.user {
			return "", fmt.Errorf("answer %+v", m)
		}
		r.machine = m.ID
		return "machine " + m.ID, valid(resp.Payload)
	})
	r.step("machine.list-get", func() (string, error) {
		resp, err := r.api.HeadscaleServiceListMachines(hs.NewHeadscaleServiceListMachinesParams().
			WithContext(r.ctx).WithUser(&r.user))
		if err != nil {
			return "", err
		}
		if len(resp.Payload.Machines) != 1 || resp.Payload.Machines[0].ID != r.machine {
			return "", fmt.Errorf("want the one machine of %s, got %d", r.user, len(resp.Payload.Machines))
		}
		if err := valid(resp.Payload); err != nil {
			return "", err
		}
		m, err := r.getMachine()
		if err == nil && m.ID != r.machine {
			err = fmt.Errorf("got machine %s", m.ID)
		}
		return "listed and got", err
	})
	r.step("machine.rename", func() (string, error) {
		resp, err := r.api.HeadscaleServiceRenameMachine(hs.NewHeadscaleServiceRenameMachineParams().
			WithContext(r.ctx).WithMachineID(r.machine).WithNewName(name + "-r"))
		if err != nil {
			return "", err
		}
		if resp.Payload.Machine == nil || resp.Payload.Machine.GivenName != name+"-r" {
			return "", fmt.Errorf("answer %+v", resp.Payload.Machine)
		}
		return "renamed", valid(resp.Payload)
	})
	r.step("machine.tags", func() (string, error) {
		resp, err := r.api.HeadscaleServiceSetTags(hs.NewHeadscaleServiceSetTagsParams().
			WithContext(r.ctx).WithMachineID(r.machine).
			WithBody(hs.HeadscaleServiceSetTagsBody{Tags: []string{"tag:ci"}}))
		if err != nil {
			return "", err
		}
		if m := resp.Payload.Machine; m == nil || !slices.Equal(m.ForcedTags, []string{"tag:ci"}) {
			return "", fmt.Errorf("answer %+v", resp.Payload.Machine)
		}
		return "forced tag:ci", valid(resp.Payload)
	})
	r.step("machine.move", func() (string, error) {
		resp, err := r.api.HeadscaleServiceMoveMachine(hs.NewHeadscaleServiceMoveMachineParams().
			WithContext(r.ctx).WithMachineID(r.machine).WithUser(&r.other))
		if err != nil {
			return "", err
		}
		if m := resp.Payload.Machine; m == nil || m.User == nil || m.User.Name != r.other {
			return "", fmt.Errorf("answer %+v", resp.Payload.Machine)
		}
		return "now " + r.other + "'s", valid(resp.Payload)
	})
	r.step("machine.expire", func() (string, error) {
		resp, err := r.api.HeadscaleServiceExpireMachine(hs.NewHeadscaleServiceExpireMachineParams().
			WithContext(r.ctx).WithMachineID(r.machine))
		if err != nil {
			return "", err
		}
		if m := resp.Payload.Machine; m == nil || time.Time(m.Expiry).After(time.Now()) {
			return "", fmt.Errorf("answer %+v", resp.Payload.Machine)
		}
		return "expired", valid(resp.Payload)
	})
}

func (r *run) machineRoutes() (*models.V1Route, error) {
	resp, err := r.api.HeadscaleServiceGetMachineRoutes(hs.NewHeadscaleServiceGetMachineRoutesParams().
		WithContext(r.ctx).WithMachineID(r.router))
	if err != nil {
		return nil, err
	}
	if err := valid(resp.Payload); err != nil {
		return nil, err
	}
	for _, rt := range resp.Payload.Routes {
		if rt.Prefix == r.route {
			return rt, nil
		}
	}
	return nil, fmt.Errorf("%s not among the machine's %d routes", r.route, len(resp.Payload.Routes))
}

// routes lists the router's announced route, enables, disables and deletes it by its ID.
func (r *run) routes() {
	var id string
	r.step("routes.list", func() (string, error) {
		resp, err := r.api.HeadscaleServiceGetRoutes(hs.NewHeadscaleServiceGetRoutesParams().WithContext(r.ctx))
		if err != nil {
			return "", err
		}
		if err := valid(resp.Payload); err != nil {
			return "", err
		}
		rt, err := r.machineRoutes()
		if err != nil {
			return "", err
		}
		if !rt.Advertised || rt.Enabled || rt.Machine == nil || rt.Machine.ID != r.router {
			return "", fmt.Errorf("route %+v", rt)
		}
		id = rt.ID
		return "route " + id, nil
	})
	toggle := func(enable bool) (string, error) {
		var err error
		if enable {
			_, err = r.api.HeadscaleServiceEnableRoute(hs.NewHeadscaleServiceEnableRouteParams().
				WithContext(r.ctx).WithRouteID(id))
		} else {
			_, err = r.api.HeadscaleServiceDisableRoute(hs.NewHeadscaleServiceDisableRouteParams().
				WithContext(r.ctx).WithRouteID(id))
		}
		if err != nil {
			return "", err
		}
		rt, err := r.machineRoutes()
		if err == nil && rt.Enabled != enable {
			err = fmt.Errorf("enabled is %v", rt.Enabled)
		}
		return fmt.Sprintf("enabled %v", enable), err
	}
	r.step("routes.enable", func() (string, error) { return toggle(true) })
	r.step("routes.disable", func() (string, error) { return toggle(false) })
	r.step("routes.delete", func() (string, error) {
		_, err := r.api.HeadscaleServiceDeleteRoute(hs.NewHeadscaleServiceDeleteRouteParams().
			WithContext(r.ctx).WithRouteID(id))
		return "deleted", err
	})
}

func (r *run) cleanup() {
	r.step("error.machine-not-found", func() (string, error) {
		_, err := r.api.HeadscaleServiceGetMachine(hs.NewHeadscaleServiceGetMachineParams().
			WithContext(r.ctx).WithMachineID("987654321"))
		return decodedFailure(err)
	})
	r.step("error.bad-api-key", func() (string, error) { return badAPIKey(r.ctx, r.endpoint) })
	r.step("machine.delete", func() (string, error) {
		_, err := r.api.HeadscaleServiceDeleteMachine(hs.NewHeadscaleServiceDeleteMachineParams().
			WithContext(r.ctx).WithMachineID(r.machine))
		if err != nil {
			return "", err
		}
		_, err = r.getMachine()
		return decodedFailure(err)
	})
	r.step("user.delete", func() (string, error) {
		for _, name := range []string{r.user, r.other} {
			if _, err := r.api.HeadscaleServiceDeleteUser(hs.NewHeadscaleServiceDeleteUserParams().
				WithContext(r.ctx).WithName(name)); err != nil {
				return "", err
			}
		}
		return "both", nil
	})
}

func main() {
	var endpoint, key, prefix, router, route string
	flag.StringVar(&endpoint, "endpoint", "", "server base URL, e.g. http://127.0.0.1:8080")
	flag.StringVar(&router, "router", "", "ID of a machine that announces -route")
	flag.StringVar(&route, "route", "", "a prefix the -router machine announces")
	flag.StringVar(&key, "key", "", "API key")
	flag.StringVar(&prefix, "prefix", "swg", "prefix of the names this run creates")
	flag.Parse()
	if endpoint == "" || key == "" || router == "" || route == "" {
		fmt.Fprintln(os.Stderr, "hsclient: -endpoint, -key, -router and -route are required")
		os.Exit(2)
	}
	api, ctx, cancel := connect(endpoint, key)
	defer cancel()
	r := &run{api: api, ctx: ctx, endpoint: endpoint, prefix: prefix, router: router, route: route}
	r.users()
	r.preAuthKeys()
	r.apiKeys()
	r.machines()
	r.routes()
	r.cleanup()
	if r.failed {
		os.Exit(1)
	}
}
