// The console's shell: sign-in, the header, and a hash router over the three views.

import {api, ApiError, token} from './api.js';
import {h} from './dom.js';
import {lang, setLang, t, translatePage} from './i18n.js';
import * as alertView from './alert.js';
import * as alertsView from './alerts.js';
import * as sirensView from './sirens.js';

const view = document.getElementById('view');
let current = null; // the shown view: {stop()}
let me = null; // who the token belongs to (GET /v1/me)

function signin(message) {
  const input = h('input', {id: 'token', name: 'token', type: 'password', autocomplete: 'off', required: true,
    placeholder: 'alertd_…'});
  const error = h('p', {class: 'error', role: 'alert'}, message || '');
  const submit = async (event) => {
    event.preventDefault();
    token.set(input.value);
    try {
      me = await api('/v1/me');
      location.hash = '#/alerts';
      route();
    } catch (err) {
      token.clear();
      error.textContent = err instanceof ApiError && err.status === 401 ? t('signin.refused') : err.message;
    }
  };
  view.replaceChildren(h('form', {class: 'signin card', onsubmit: submit},
    h('h1', {}, t('signin.title')),
    h('label', {for: 'token'}, t('signin.token')), input,
    h('p', {class: 'hint'}, t('signin.hint')),
    error,
    h('button', {type: 'submit', class: 'primary'}, t('signin.submit'))));
  input.focus();
}

function header() {
  document.getElementById('nav').hidden = !me;
  document.getElementById('signout').hidden = !me;
  document.getElementById('who').textContent = me ? `${me.user} · ${me.cell_name} · ${me.roles.map((r) => t('role.' + r)).join(', ')}` : '';
  document.getElementById('lang').textContent = lang() === 'fr' ? 'English' : 'Français';
  for (const link of document.querySelectorAll('#nav a')) {
    link.classList.toggle('here', location.hash.startsWith(link.getAttribute('href')));
  }
}

async function route() {
  if (current) current.stop();
  current = null;
  translatePage();
  if (!token.get()) {
    me = null;
    header();
    return signin();
  }
  if (!me) {
    try {
      me = await api('/v1/me');
    } catch (err) {
      token.clear();
      return route();
    }
  }
  header();
  const [, page, id] = location.hash.split('/');
  view.replaceChildren();
  if (page === 'sirens') current = sirensView.show(view, me);
  else if (page === 'alerts' && id) current = alertView.show(view, decodeURIComponent(id), me);
  else current = alertsView.show(view, me);
}

document.getElementById('signout').addEventListener('click', () => {
  token.clear();
  me = null;
  location.hash = '';
  route();
});
document.getElementById('lang').addEventListener('click', () => {
  setLang(lang() === 'fr' ? 'en' : 'fr');
  route();
});
window.addEventListener('alertd:signedout', () => {
  token.clear();
  me = null;
  route();
});
window.addEventListener('hashchange', route);
route();
