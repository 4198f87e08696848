/* Waitlist form: submits in place as text/plain JSON (no CORS preflight), credentials omitted.
   Without this script the form is a plain POST answered with a 303 to #waitlist-thanks. */
(function (d) {
  var form = d.querySelector("form.waitlist-form");
  if (!form || !window.fetch || !window.FormData || !window.URLSearchParams) return;
  var status = form.querySelector(".waitlist-status");
  var messages = {
    email: ["Enter your email address.", "Enter an email address like name@example.com."],
    variant: ["Choose an option."],
    quantity: ["Enter a whole number from 1 to " + (form.elements.quantity && form.elements.quantity.max) + "."],
    consent: ["Tick the box to agree to get an email about this product."]
  };
  var busy = false;

  // The page's campaign parameters travel with the signup (also in a fallback plain POST).
  new URLSearchParams(location.search).forEach(function (value, name) {
    if (/^utm_(source|medium|campaign|term|content)$/.test(name) && !form.elements[name]) {
      var input = d.createElement("input");
      input.type = "hidden";
      input.name = name;
      input.value = value.slice(0, 200);
      form.appendChild(input);
    }
  });
  form.noValidate = true;  // errors are shown next to each field instead of browser bubbles

  function control(name) {
    var field = form.elements[name];
    return field && field.type !== "hidden" && field.name !== "website" ? field : null;
  }

  function clear() {
    Array.prototype.forEach.call(form.querySelectorAll(".waitlist-error"), function (node) {
      var field = control(node.getAttribute("data-for"));
      if (field) {
        field.removeAttribute("aria-invalid");
        field.setAttribute("aria-describedby", (field.getAttribute("aria-describedby") || "")
          .replace(node.id, "").trim());
        if (!field.getAttribute("aria-describedby")) field.removeAttribute("aria-describedby");
      }
      node.parentNode.removeChild(node);
    });
    say("", "");
  }

  function fieldError(field, text) {
    var note = d.createElement("p");
    note.className = "waitlist-error";
    note.id = field.id + "-error";
    note.setAttribute("data-for", field.name);
    note.textContent = text;
    field.parentNode.appendChild(note);
    field.setAttribute("aria-invalid", "true");
    var described = field.getAttribute("aria-describedby");
    field.setAttribute("aria-describedby", described ? described + " " + note.id : note.id);
  }

  function say(text, kind, link) {
    status.textContent = text;
    status.className = "waitlist-status" + (kind ? " is-" + kind : "");
    if (link) {
      var a = d.createElement("a");
      a.href = link.href;
      a.textContent = link.text;
      status.appendChild(d.createTextNode(" "));
      status.appendChild(a);
    }
  }

  function showErrors(errors) {
    var first = null, general = [];
    Object.keys(errors).forEach(function (name) {
      var field = control(name), text = [].concat(errors[name]).join(" ");
      if (field) {
        fieldError(field, text);
        first = first || field;
      } else {
        general.push(text);
      }
    });
    if (general.length || !first) say(general.join(" ") || "Please check the form.", "error");
    (first || status).focus();
  }

  function wait(seconds) {
    if (!(seconds > 0)) return "a little while";
    if (seconds < 90) return seconds + " seconds";
    return Math.ceil(seconds / 60) + " minutes";
  }

  function answer(response, body) {
    if (response.status === 202) {
      form.reset();
      say("Thanks! Check your inbox: click the link in our email to confirm your place on the waitlist.", "ok");
      status.focus();
    } else if (response.status === 200 && body.status === "available" && /^https?:/.test(body.url || "")) {
      say("Good news: it's back in stock, no need to wait.", "ok", {href: body.url, text: "Buy it now"});
      status.focus();
    } else if (response.status === 429) {
      var retry = parseInt(response.headers.get("Retry-After"), 10);
      say("Too many sign-ups from here just now. Please try again in " + wait(retry) + ".", "error");
      status.focus();
    } else if (response.status === 400 && body.errors) {
      showErrors(body.errors);
    } else {
      var all = body && body.errors ? Object.keys(body.errors).map(function (k) { return body.errors[k]; }) : [];
      say([].concat.apply([], all).join(" ") || "Something went wrong. Please try again.", "error");
      status.focus();
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (busy) return;
    clear();
    var invalid = {};
    Array.prototype.forEach.call(form.elements, function (field) {
      if (control(field.name) && field.willValidate && !field.checkValidity()) {
        var own = messages[field.name] || [field.validationMessage];
        invalid[field.name] = field.validity.valueMissing ? own[0] : own[own.length - 1];
      }
    });
    if (Object.keys(invalid).length) return showErrors(invalid);
    var data = {referrer: d.referrer};
    new FormData(form).forEach(function (value, name) {
      if (value !== "") data[name] = value;
    });
    busy = true;
    form.setAttribute("aria-busy", "true");
    say("Sending…", "");
    function done() {
      busy = false;
      form.removeAttribute("aria-busy");
    }
    fetch(form.action, {
      method: "POST",
      body: JSON.stringify(data),
      credentials: "omit",
      headers: {"Content-Type": "text/plain"}
    }).then(function (response) {
      return response.json().then(function (body) {
        done();
        answer(response, body || {});
      });
    }).catch(function () {
      // Unreachable API, or an answer that is not ours: the plain form post still works.
      done();
      form.submit();
    });
  });
})(document);
