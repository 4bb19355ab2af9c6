"""The user side of Slack: a driver that types slash commands, fills modals, clicks, submits and closes.

It keeps modal state where Slack keeps it (in the emulator's view records), sends the payloads Slack would send
over the app's transport (signed HTTP or Socket Mode), and applies the app's acknowledgement as Slack does:
``response_action`` update/push/errors/clear, an empty ack closing the view, options for external selects.
What Slack's own client refuses (empty required inputs, an invalid view in a response) raises
:class:`SlackClientRefusal`; an ack later than 3 s raises :class:`AckTimeoutError` (or is flagged).
"""

from __future__ import annotations

import time
from typing import Any

from . import blockkit, payloads
from .errors import ApiError, DriverError, SlackClientRefusal
from .limits import check_option
from .registry import BotToken, Channel, Team, User
from .response_urls import show
from .server import DEFAULT_CHANNEL, DEFAULT_USER, SlackEmulator
from .transport import ACK_LIMIT, AppResponse, HttpTransport, Kind, SocketModeTransport, Transport
from .views import Owner, ViewRecord, validate
from .world import ResponseTarget


class SlackDriver:
    """Plays one or more users against an app, through ``transport``."""

    def __init__(
        self,
        emulator: SlackEmulator,
        transport: Transport,
        *,
        user: str = DEFAULT_USER,
        channel: str = DEFAULT_CHANNEL,
        ack_limit: float = ACK_LIMIT,
        late_ok: bool = False,
    ) -> None:
        self.emulator = emulator
        self.transport = transport
        self.user = user
        self.channel = channel
        self.ack_limit = ack_limit
        self.late_ok = late_ok
        self.last_errors: dict[str, str] | None = None
        self.responses: list[AppResponse] = []
        self._suggested: dict[str, list[dict[str, Any]]] = {}
        self._marks: dict[str, tuple[str, str] | None] = {}

    @classmethod
    def over_http(cls, emulator: SlackEmulator, url: str, signing_secret: str, **kwargs: Any) -> SlackDriver:
        """A driver that POSTs signed requests to the app's request URL."""
        return cls(emulator, HttpTransport(url, signing_secret), **kwargs)

    @classmethod
    def over_socket_mode(cls, emulator: SlackEmulator, **kwargs: Any) -> SlackDriver:
        """A driver that sends envelopes over the app's Socket Mode connection to ``emulator``."""
        return cls(emulator, SocketModeTransport(emulator.socket), **kwargs)

    async def aclose(self) -> None:
        """Release the transport."""
        await self.transport.close()

    async def __aenter__(self) -> SlackDriver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- who and where -----------------------------------------------------------------------------------

    def _who(self, user: str | None) -> tuple[BotToken, Team, User]:
        registry = self.emulator.world.registry
        person = registry.users.get(user or self.user)
        if person is None:
            raise DriverError(f"unknown user {user or self.user!r}: add it with emulator.add_user()")
        return registry.bot_for_team(person.team_id), registry.team(person.team_id), person

    def _record(self, user: str | None, *, home: bool = False) -> ViewRecord:
        _bot, team, person = self._who(user)
        views = self.emulator.world.views
        record = views.home(team.id, person.id) if home else views.top(team.id, person.id)
        if record is None:
            raise DriverError(f"{person.id} has no {'home tab' if home else 'open modal'}")
        return record

    def _poke(self) -> None:
        self.emulator.world.changes.poke()

    # -- views as the user sees them ---------------------------------------------------------------------

    def current_view(self, user: str | None = None) -> dict[str, Any] | None:
        """The modal view on top of the user's stack (``None`` when no modal is open)."""
        _bot, team, person = self._who(user)
        return self.emulator.current_view(person.id, team.id)

    def view_stack(self, user: str | None = None) -> list[dict[str, Any]]:
        """All open modal views of the user, bottom first."""
        _bot, team, person = self._who(user)
        return self.emulator.view_stack(person.id, team.id)

    def home_view(self, user: str | None = None) -> dict[str, Any] | None:
        """The user's home tab."""
        _bot, team, person = self._who(user)
        return self.emulator.home_view(person.id, team.id)

    def _top_mark(self, user: str) -> tuple[str, str] | None:
        view = self.current_view(user)
        return (view["id"], view["hash"]) if view else None

    async def wait_for_view(
        self, user: str | None = None, *, callback_id: str | None = None, within: float = 3.0
    ) -> dict[str, Any]:
        """The top modal once it differs from what it was at the last delivery (or has ``callback_id``).

        Apps usually ack first and call views.open/update right after, so the view can appear after the ack.
        """
        who = user or self.user

        def ready() -> dict[str, Any] | None:
            view = self.current_view(who)
            if view is None:
                return None
            if callback_id is not None:
                return view if view["callback_id"] == callback_id else None
            return view if (view["id"], view["hash"]) != self._marks.get(who) else None

        return await self.emulator.world.changes.wait_for(ready, within)

    # -- deliveries --------------------------------------------------------------------------------------

    async def deliver(self, kind: Kind, payload: dict[str, Any], user: str | None = None) -> AppResponse:
        """Send any payload over the transport, with Slack's ack limit."""
        who = user or self.user
        self._marks[who] = self._top_mark(who)
        response = await self.transport.deliver(kind, payload, limit=self.ack_limit, late_ok=self.late_ok)
        self.responses.append(response)
        return response

    async def slash_command(
        self, command: str, text: str = "", *, user: str | None = None, channel: str | None = None
    ) -> AppResponse:
        """Type ``/command text`` in ``channel``; a fresh trigger_id and response_url come with it."""
        bot, team, person = self._who(user)
        chan = self.emulator.world.registry.channel(team.id, channel or self.channel)
        world = self.emulator.world
        payload = payloads.slash_command(
            bot=bot,
            team=team,
            user=person,
            channel=chan,
            command=command,
            text=text,
            trigger_id=world.issue_trigger_id(person.id, team.id),
            response_url=world.issue_response_url(ResponseTarget(team.id, chan.id, person.id)),
        )
        response = await self.deliver("slash_commands", payload, person.id)
        self._show_command_reply(response, chan, person)
        return response

    def _show_command_reply(self, response: AppResponse, channel: Channel, person: User) -> None:
        """Slack shows a slash command's ack body: ephemeral, or in the channel for ``in_channel``."""
        if response.status != 200 or response.late or not response.body:
            return
        body = response.body if isinstance(response.body, dict) else {"text": str(response.body)}
        show(self.emulator.world, ResponseTarget(channel.team_id, channel.id, person.id), body)
        self._poke()

    async def set_value(
        self, action_id: str, value: Any, *, block_id: str | None = None, user: str | None = None, home: bool = False
    ) -> AppResponse | None:
        """Enter ``value`` into an element of the current modal (or home tab), shaped as Slack reports it.

        Text inputs take a string; selects, radios and external selects an option value (or option dict);
        multi-selects and checkboxes a list of values; datepicker ``YYYY-MM-DD``; timepicker ``HH:MM``.
        Elements outside input blocks (and inputs with ``dispatch_action``) also send block_actions, as on
        Slack; the app's ack is returned then.
        """
        record = self._record(user, home=home)
        block, element = blockkit.find_element(record.blocks, action_id, block_id=block_id)
        state = blockkit.state_value(element, value, known=self._suggested.get(action_id))
        self.emulator.world.views.set_value(record, block["block_id"], element["action_id"], state)
        self._poke()
        if block.get("type") == "input" and not block.get("dispatch_action"):
            return None
        return await self._view_action(record, block, element, state, user)

    async def click(
        self,
        action_id: str,
        *,
        value: str | None = None,
        block_id: str | None = None,
        user: str | None = None,
        channel: str | None = None,
        ts: str | None = None,
        home: bool | None = None,
    ) -> AppResponse:
        """Click a button (or pick an overflow item by ``value``) in the current modal, the home tab, or a
        message (given ``channel``/``ts``, else the newest message holding ``action_id``). ``home`` True or False
        looks only in the home tab or only in the modal (a page showing both knows which one was clicked)."""
        if channel is None and ts is None:
            for in_home in (False, True) if home is None else (home,):
                try:
                    record = self._record(user, home=in_home)
                    block, element = self._clickable(record.blocks, action_id, block_id, value)
                except (DriverError, LookupError):
                    continue
                state = self._click_state(element, value)
                return await self._view_action(record, block, element, state, user)
        return await self._message_click(action_id, value, block_id, user, channel, ts)

    @staticmethod
    def _clickable(
        blocks: list[dict[str, Any]], action_id: str, block_id: str | None, value: str | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        block, element = blockkit.find_element(blocks, action_id, block_id=block_id, value=value)
        if element.get("type") == "button" and value is not None and element.get("value") != value:
            raise LookupError(f"button {action_id!r} has value {element.get('value')!r}, not {value!r}")
        return block, element

    @staticmethod
    def _click_state(element: dict[str, Any], value: str | None) -> dict[str, Any] | None:
        if element.get("type") == "button" or element.get("type") not in blockkit.STATE_KEYS:
            return None
        return blockkit.state_value(element, value)

    async def _view_action(
        self,
        record: ViewRecord,
        block: dict[str, Any],
        element: dict[str, Any],
        state: dict[str, Any] | None,
        user: str | None,
    ) -> AppResponse:
        bot, team, person = self._who(user)
        action = blockkit.action_item(block, element, state, f"{time.time():.6f}")
        payload = payloads.block_actions_in_view(
            bot=bot,
            team=team,
            user=person,
            view=record.to_json(),
            action=action,
            trigger_id=self.emulator.world.issue_trigger_id(person.id, team.id),
        )
        return await self.deliver("interactive", payload, person.id)

    async def _message_click(
        self,
        action_id: str,
        value: str | None,
        block_id: str | None,
        user: str | None,
        channel: str | None,
        ts: str | None,
    ) -> AppResponse:
        bot, team, person = self._who(user)
        world = self.emulator.world
        ephemeral = False
        if channel is not None and ts is not None:
            private = world.messages.ephemeral_at(channel, ts, person.id)
            chan_id, message, ephemeral = channel, private or world.messages.get(channel, ts), private is not None
        else:
            found = world.messages.find_with_action(action_id)
            private = world.messages.find_ephemeral_with_action(action_id, person.id)
            if private is not None and (found is None or float(private.message["ts"]) > float(found[1]["ts"])):
                found, ephemeral = (private.channel, private.message), True
            if found is None:
                raise DriverError(f"nothing on screen has action_id={action_id!r}")
            chan_id, message = found
        chan = world.registry.channels[chan_id]
        block, element = self._clickable(message.get("blocks") or [], action_id, block_id, value)
        state = self._click_state(element, value)
        payload = payloads.block_actions_in_message(
            bot=bot,
            team=team,
            user=person,
            channel=chan,
            message=message,
            action=blockkit.action_item(block, element, state, f"{time.time():.6f}"),
            trigger_id=world.issue_trigger_id(person.id, team.id),
            response_url=world.issue_response_url(ResponseTarget(team.id, chan.id, person.id, message["ts"])),
            values={},
            ephemeral=ephemeral,
        )
        return await self.deliver("interactive", payload, person.id)

    async def submit(self, user: str | None = None) -> AppResponse:
        """Press the modal's submit button and apply the app's answer as Slack does."""
        bot, team, person = self._who(user)
        record = self._record(person.id)
        if not record.definition.get("submit"):
            raise SlackClientRefusal("this view has no submit button")
        missing = [
            b["block_id"]
            for b in record.blocks
            if blockkit.is_required_input(b) and blockkit.is_empty(self._state_of(record, b))
        ]
        if missing:
            raise SlackClientRefusal("required inputs are empty", missing)
        payload = payloads.view_submission(
            bot=bot,
            team=team,
            user=person,
            view=record.to_json(),
            trigger_id=self.emulator.world.issue_trigger_id(person.id, team.id),
        )
        self.last_errors = None
        record.errors = {}
        response = await self.deliver("interactive", payload, person.id)
        if response.status == 200 and not response.late:
            self._apply_submission(response, record, Owner(team.id, person.id, bot.app_id, bot.bot_id))
        self._poke()
        return response

    @staticmethod
    def _state_of(record: ViewRecord, block: dict[str, Any]) -> dict[str, Any] | None:
        action_id = (block.get("element") or {}).get("action_id", "")
        return record.values.get(block.get("block_id", ""), {}).get(action_id)

    def _apply_submission(self, response: AppResponse, record: ViewRecord, owner: Owner) -> None:
        """``response_action`` handling: errors keep the view, update replaces, push pushes, clear closes all,
        an empty ack closes the submitted view."""
        views = self.emulator.world.views
        body = response.body
        action = body.get("response_action") if isinstance(body, dict) else None
        if isinstance(body, str) and body.strip():
            raise SlackClientRefusal("view_submission ack must be empty or JSON", [body[:200]])
        try:
            if action is None:
                if views.top(owner.team_id, owner.user_id) is record:
                    views.pop(owner.team_id, owner.user_id)
            elif action == "errors":
                self.last_errors = record.errors = self._checked_errors(record, body.get("errors"))
            elif action == "update":
                views.replace(record, validate(body.get("view"), "modal"), None)
            elif action == "push":
                views.push(owner, body.get("view"))
            elif action == "clear":
                views.clear(owner.team_id, owner.user_id)
            else:
                raise SlackClientRefusal(f"unknown response_action {action!r}")
        except ApiError as exc:
            raise SlackClientRefusal(f"Slack rejects response_action={action}: {exc.code}", exc.messages) from exc

    @staticmethod
    def _checked_errors(record: ViewRecord, errors: Any) -> dict[str, str]:
        """Slack only shows errors keyed by an input block's block_id; anything else fails the submission."""
        inputs = {b["block_id"] for b in record.blocks if b.get("type") == "input"}
        if not isinstance(errors, dict) or not errors:
            raise SlackClientRefusal("response_action=errors needs a non-empty errors object")
        unknown = [k for k in errors if k not in inputs]
        if unknown:
            raise SlackClientRefusal("errors keyed by something other than an input block_id", unknown)
        return {str(k): str(v) for k, v in errors.items()}

    async def close(self, user: str | None = None) -> AppResponse | None:
        """Press the modal's close button: pops the view (or clears all with ``clear_on_close``);
        ``view_closed`` reaches the app only if the view set ``notify_on_close``."""
        bot, team, person = self._who(user)
        record = self._record(person.id)
        view = record.to_json()
        cleared = bool(record.definition.get("clear_on_close"))
        views = self.emulator.world.views
        if cleared:
            views.clear(team.id, person.id)
        else:
            views.pop(team.id, person.id)
        self._poke()
        if not record.definition.get("notify_on_close"):
            return None
        payload = payloads.view_closed(bot=bot, team=team, user=person, view=view, is_cleared=cleared)
        return await self.deliver("interactive", payload, person.id)

    async def options(
        self, action_id: str, value: str, *, block_id: str | None = None, user: str | None = None, home: bool = False
    ) -> list[dict[str, Any]]:
        """Type ``value`` into an external select: the options the app returns (``block_suggestion``).

        As on Slack, nothing is asked below the element's ``min_query_length`` (default 3): returns ``[]``.
        """
        bot, team, person = self._who(user)
        record = self._record(person.id, home=home)
        block, element = blockkit.find_element(record.blocks, action_id, block_id=block_id)
        if not str(element.get("type")).endswith("external_select"):
            raise DriverError(f"{action_id!r} is a {element.get('type')}, not an external select")
        if len(value) < int(element.get("min_query_length", 3)):
            return []
        payload = payloads.block_suggestion(
            bot=bot,
            team=team,
            user=person,
            view=record.to_json(),
            block_id=block["block_id"],
            action_id=action_id,
            value=value,
        )
        response = await self.deliver("interactive", payload, person.id)
        options = self._checked_options(response.json)
        self._suggested[action_id] = options
        return options

    @staticmethod
    def _checked_options(body: dict[str, Any]) -> list[dict[str, Any]]:
        options = list(body.get("options") or [])
        for group in body.get("option_groups") or []:
            options += group.get("options") or []
        problems = [p for i, o in enumerate(options) for p in check_option(o, True, f"/options/{i}")]
        if len(options) > 100:
            problems.append("[ERROR] no more than 100 items allowed [json-pointer:/options]")
        if problems:
            raise SlackClientRefusal("Slack rejects these options", problems)
        return options

    async def event(self, event: dict[str, Any], *, user: str | None = None) -> AppResponse:
        """Deliver an Events API event (wrapped in ``event_callback``) for the user's team."""
        bot, _team, person = self._who(user)
        payload = payloads.event_callback(bot=bot, event=event, event_id=self.emulator.world.ids.next("Ev"))
        return await self.deliver("events_api", payload, person.id)

    async def open_home(self, user: str | None = None) -> AppResponse:
        """The user opens the app's Home tab: ``app_home_opened``."""
        bot, team, person = self._who(user)
        dm, _existed = self.emulator.world.registry.open_dm(team.id, bot.bot_user_id, person.id)
        view = self.home_view(person.id)
        return await self.event(payloads.app_home_opened(user=person, channel=dm, view=view), user=person.id)

    async def url_verification(self, challenge: str = "emulator-challenge") -> AppResponse:
        """The Events API URL check (HTTP only; Slack never sends it over Socket Mode)."""
        if not isinstance(self.transport, HttpTransport):
            raise DriverError("url_verification only exists for HTTP request URLs")
        return await self.deliver("events_api", payloads.url_verification(challenge))
