// Helpers shared by the scenario programs of each headscale version (v0.29.3/, v0.22.3/):
// install-swagger-client.sh builds one of those with this file, against the client go-swagger
// generates from that version's OpenAPI document. Written for this project.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	httptransport "github.com/go-openapi/runtime/client"
	"github.com/go-openapi/strfmt"

	"hsclient/internal/gen/client"
	hs "hsclient/internal/gen/client/headscale_service"
	"hsclient/internal/gen/models"
)

// A failed call as the generated code returns it: the status and the decoded error body.
type apiError interface {
	Code() int
	GetPayload() *models.RPCStatus
}

type validator interface {
	Validate(strfmt.Registry) error
}

// report prints the steps of a run and remembers whether one failed.
type report struct {
	failed bool
}

func newAPI(endpoint, key string) (hs.ClientService, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, err
	}
	tr := httptransport.New(u.Host, u.Path, []string{u.Scheme})
	tr.DefaultAuthentication = httptransport.BearerToken(key)
	return client.New(tr, strfmt.Default).HeadscaleService, nil
}

// connect makes the client of the server at endpoint and the deadline of the whole run; a
// malformed endpoint ends the program (status 2, as missing flags do).
func connect(endpoint, key string) (hs.ClientService, context.Context, context.CancelFunc) {
	api, err := newAPI(endpoint, key)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hsclient:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	return api, ctx, cancel
}

// step runs one check and reports it; fn returns what it saw, or why it failed.
func (r *report) step(name string, fn func() (string, error)) {
	detail, err := fn()
	line := map[string]any{"step": name, "ok": err == nil, "detail": detail}
	if err != nil {
		line["detail"] = err.Error()
		r.failed = true
	}
	b, _ := json.Marshal(line)
	fmt.Println(string(b))
}

// valid applies the generated Validate to a decoded payload, as the provider does. Answers
// the document declares as empty objects are generated as bare interfaces: those must have
// decoded to a JSON object.
func valid(p any) error {
	if v, ok := p.(validator); ok {
		if err := v.Validate(strfmt.Default); err != nil {
			return fmt.Errorf("payload does not validate: %w", err)
		}
		return nil
	}
	if _, ok := p.(map[string]any); !ok {
		return fmt.Errorf("payload is %T, not a JSON object", p)
	}
	return nil
}

// failure checks that err is the generated error type with the status and gRPC code wanted
// and a message: the error body was decoded, not just the status seen.
func failure(err error, status int, grpcCode int32) (string, error) {
	var ae apiError
	if err == nil {
		return "", errors.New("the call succeeded")
	}
	if !errors.As(err, &ae) {
		return "", fmt.Errorf("not a decoded API error: %T: %v", err, err)
	}
	p := ae.GetPayload()
	if ae.Code() != status || p == nil || p.Code != grpcCode || p.Message == "" {
		return "", fmt.Errorf("got status %d, body %+v; want %d with code %d and a message",
			ae.Code(), p, status, grpcCode)
	}
	return fmt.Sprintf("%d code=%d %q", ae.Code(), p.Code, p.Message), nil
}

// decodedFailure checks that err is the generated error type with a decoded message.
func decodedFailure(err error) (string, error) {
	var ae apiError
	if err == nil || !errors.As(err, &ae) || ae.GetPayload() == nil || ae.GetPayload().Message == "" {
		return "", fmt.Errorf("want a decoded error, got %T %v", err, err)
	}
	return fmt.Sprintf("%d %q", ae.Code(), ae.GetPayload().Message), nil
}

// badAPIKey lists users with a key the server cannot know: a 401 the client decodes, or the
// text/plain one headscale sends.
func badAPIKey(ctx context.Context, endpoint string) (string, error) {
	bad, err := newAPI(endpoint, "hskey-api-000000000000-"+strings.Repeat("0", 64))
	if err != nil {
		return "", err
	}
	_, err = bad.HeadscaleServiceListUsers(hs.NewHeadscaleServiceListUsersParams().WithContext(ctx))
	var coded interface{ Code() int }
	switch {
	case err == nil:
		return "", errors.New("the call succeeded")
	case errors.As(err, &coded) && coded.Code() == 401:
		return "401 decoded", nil
	case err.Error() == textBody401:
		// headscale answers 401 with a text/plain body; the provider maps this exact
		// error to "check your authentication credentials".
		return "401 as text/plain", nil
	}
	return "", fmt.Errorf("neither a decoded 401 nor headscale's text/plain one: %T %v", err, err)
}

// What the generated client returns for a 401 whose body is text/plain, as the Terraform
// provider's error handling spells it.
const textBody401 = "&{0 [] } (*models.RPCStatus) is not supported by the TextConsumer, " +
	"can be resolved by supporting TextUnmarshaler interface"
