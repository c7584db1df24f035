package main

// authorization.k8s.io/v1 access reviews (SubjectAccessReview, SelfSubjectAccessReview,
// LocalSubjectAccessReview), answered by the server's own authorizer: `kubectl auth can-i`
// works, and a test can ask what a service account may do without a token for it.

import (
	"context"
	"fmt"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
)

type reviewREST struct {
	authz    authorizer.Authorizer
	kind     string
	singular string
}

var _ rest.Creater = &reviewREST{}
var _ rest.Scoper = &reviewREST{}
var _ rest.SingularNameProvider = &reviewREST{}

func reviewStorage(authz authorizer.Authorizer) map[string]rest.Storage {
	return map[string]rest.Storage{
		"subjectaccessreviews":      &reviewREST{authz: authz, kind: "SubjectAccessReview", singular: "subjectaccessreview"},
		"selfsubjectaccessreviews":  &reviewREST{authz: authz, kind: "SelfSubjectAccessReview", singular: "selfsubjectaccessreview"},
		"localsubjectaccessreviews": &reviewREST{authz: authz, kind: "LocalSubjectAccessReview", singular: "localsubjectaccessreview"},
	}
}

func (r *reviewREST) New() runtime.Object {
	obj, _ := Scheme.New(authorizationv1.SchemeGroupVersion.WithKind(r.kind))
	return obj
}
func (r *reviewREST) Destroy()                {}
func (r *reviewREST) NamespaceScoped() bool   { return r.kind == "LocalSubjectAccessReview" }
func (r *reviewREST) GetSingularName() string { return r.singular }

func (r *reviewREST) Create(ctx context.Context, obj runtime.Object, createValidation rest.ValidateObjectFunc, options *metav1.CreateOptions) (runtime.Object, error) {
	var spec *authorizationv1.SubjectAccessReviewSpec
	var status *authorizationv1.SubjectAccessReviewStatus
	var u user.Info
	switch o := obj.(type) {
	case *authorizationv1.SubjectAccessReview:
		spec, status = &o.Spec, &o.Status
	case *authorizationv1.LocalSubjectAccessReview:
		spec, status = &o.Spec, &o.Status
		ns, _ := genericapirequest.NamespaceFrom(ctx)
		if spec.ResourceAttributes == nil || spec.ResourceAttributes.Namespace != ns {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("spec.resourceAttributes.namespace must be %q", ns))
		}
	case *authorizationv1.SelfSubjectAccessReview:
		requester, ok := genericapirequest.UserFrom(ctx)
		if !ok {
			return nil, apierrors.NewBadRequest("no user in the request")
		}
		u = requester
		status = &o.Status
		spec = &authorizationv1.SubjectAccessReviewSpec{
			ResourceAttributes: o.Spec.ResourceAttributes, NonResourceAttributes: o.Spec.NonResourceAttributes}
	default:
		return nil, apierrors.NewBadRequest(fmt.Sprintf("not a %s: %T", r.kind, obj))
	}
	if (spec.ResourceAttributes == nil) == (spec.NonResourceAttributes == nil) {
		return nil, apierrors.NewBadRequest("exactly one of spec.resourceAttributes and spec.nonResourceAttributes must be set")
	}
	if u == nil {
		if spec.User == "" && len(spec.Groups) == 0 {
			return nil, apierrors.NewBadRequest("spec.user or spec.groups must be set")
		}
		extra := map[string][]string{}
		for k, v := range spec.Extra {
			extra[k] = v
		}
		u = &user.DefaultInfo{Name: spec.User, UID: spec.UID, Groups: spec.Groups, Extra: extra}
	}
	if createValidation != nil {
		if err := createValidation(ctx, obj.DeepCopyObject()); err != nil {
			return nil, err
		}
	}
	attrs := authorizer.AttributesRecord{User: u}
	if ra := spec.ResourceAttributes; ra != nil {
		attrs.ResourceRequest = true
		attrs.Verb, attrs.Namespace, attrs.APIGroup, attrs.APIVersion = ra.Verb, ra.Namespace, ra.Group, ra.Version
		attrs.Resource, attrs.Subresource, attrs.Name = ra.Resource, ra.Subresource, ra.Name
	} else {
		attrs.Verb, attrs.Path = spec.NonResourceAttributes.Verb, spec.NonResourceAttributes.Path
	}
	decision, reason, err := r.authz.Authorize(ctx, attrs)
	*status = authorizationv1.SubjectAccessReviewStatus{
		Allowed: decision == authorizer.DecisionAllow,
		Denied:  decision == authorizer.DecisionDeny,
		Reason:  reason,
	}
	if err != nil {
		status.EvaluationError = err.Error()
	}
	return obj, nil
}
